"""Open a page in a real headless Chromium and report what a person would see go wrong:
console errors, uncaught exceptions, and images that did not load (Chrome DevTools Protocol)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def inspect_page(url: str, timeout: float = 60.0) -> dict:
    """Load `url` headless; returns {"console_errors", "exceptions", "images", "ids"}."""
    import websocket  # websocket-client

    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-allow-origins=*", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout)
        counter = iter(range(1, 10_000))
        events: list[dict] = []

        def call(method: str, **params) -> dict:
            ident = next(counter)
            socket.send(json.dumps({"id": ident, "method": method, "params": params}))
            while True:
                message = json.loads(socket.recv())
                if message.get("id") == ident:
                    return message.get("result", {})
                events.append(message)

        for domain in ("Runtime", "Log", "Page"):
            call(f"{domain}.enable")
        call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            events.append(json.loads(socket.recv()))
        images = call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"))
        ids = call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.querySelectorAll('figure')).map(f => f.id)"))
        socket.close()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    console_errors = [e["params"] for e in events
                      if e.get("method") == "Runtime.consoleAPICalled"
                      and e["params"].get("type") in ("error", "assert")]
    console_errors += [e["params"]["entry"] for e in events
                       if e.get("method") == "Log.entryAdded"
                       and e["params"]["entry"].get("level") == "error"]
    exceptions = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    return {"console_errors": console_errors, "exceptions": exceptions,
            "images": images["result"]["value"], "ids": ids["result"]["value"]}
