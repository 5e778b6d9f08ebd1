"""Cost of flagged frames in a long run outside its clusters: the streaming `Monitor` against the
previous implementation (which rewrote the whole npz on every flagged frame), side by side.

    python benchmarks/monitor_flagged.py --frames 100000 --old-frames 2000

Each flagged frame is an aspirin snapshot (21 atoms). Reports the cumulative time at evenly
spaced counts and the time per frame in each block, so that linear growth (constant time per
frame) is visible, and the previous implementation's growth for comparison (git revision given
by --old-revision, imported from `git show`).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlff_core.data.molecules import named_molecule
from mlff_core.monitors import Monitor, Snapshot

ROOT = Path(__file__).resolve().parents[1]


def old_monitor_class(revision: str):
    """`Monitor` as it was at `revision` (mlff_core/monitors/monitor.py from git)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show",
                             f"{revision}:mlff_core/monitors/monitor.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_monitor.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_monitor", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_monitor"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Monitor, module.Snapshot


def timed(monitor_class, snapshot_class, path: Path, n_frames: int, marks: int,
          positions: np.ndarray, numbers: np.ndarray) -> list[tuple[int, float]]:
    """Cumulative seconds after each of `marks` evenly spaced counts of flagged frames."""
    monitor = monitor_class("exploration", "flag", flagged_path=path)
    rng = np.random.default_rng(0)
    checkpoints = set(np.linspace(n_frames / marks, n_frames, marks).astype(int).tolist())
    out, start = [], time.perf_counter()
    for step in range(1, n_frames + 1):
        snapshot = snapshot_class(step, positions + 0.01 * rng.standard_normal(positions.shape),
                                  numbers)
        monitor.observe(snapshot, True, "unexplored: nearest cluster 0, distance/radius 1.234")
        if step in checkpoints:
            out.append((step, time.perf_counter() - start))
    monitor.close()
    return out


def report(name: str, rows: list[tuple[int, float]]) -> None:
    print(f"\n{name}\n| flagged frames | cumulative s | ms per frame in this block |")
    print("|---|---|---|")
    previous = (0, 0.0)
    for count, seconds in rows:
        per_frame = 1000.0 * (seconds - previous[1]) / (count - previous[0])
        print(f"| {count:,} | {seconds:.2f} | {per_frame:.3f} |")
        previous = (count, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--old-frames", type=int, default=2000)
    parser.add_argument("--old-revision", default="4dbe24f")
    parser.add_argument("--marks", type=int, default=10)
    args = parser.parse_args()
    atoms = named_molecule("aspirin").atoms
    with tempfile.TemporaryDirectory() as tmp:
        new = timed(Monitor, Snapshot, Path(tmp) / "flagged.xyz", args.frames, args.marks,
                    atoms.positions, atoms.numbers)
        report(f"streaming Monitor (extxyz append), {args.frames:,} frames", new)
        size = (Path(tmp) / "flagged.xyz").stat().st_size
        print(f"file: {size / 1e6:.1f} MB")
        if args.old_frames:
            old_class, old_snapshot = old_monitor_class(args.old_revision)
            old = timed(old_class, old_snapshot, Path(tmp) / "flagged.npz", args.old_frames,
                        args.marks, atoms.positions, atoms.numbers)
            report(f"previous Monitor ({args.old_revision}, npz rewritten per frame), "
                   f"{args.old_frames:,} frames", old)
            new_at = dict(timed(Monitor, Snapshot, Path(tmp) / "again.xyz", args.old_frames,
                                args.marks, atoms.positions, atoms.numbers))
            ratio = old[-1][1] / new_at[args.old_frames]
            print(f"\nat {args.old_frames:,} frames, same run: previous / streaming = "
                  f"{ratio:.1f}×")


if __name__ == "__main__":
    sys.exit(main())
