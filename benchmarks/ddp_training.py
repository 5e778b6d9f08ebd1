"""Epoch time of data-parallel training: `mlff train` in 1 process against
`torchrun --nproc-per-node 2 mlff train` (DDP, gloo, CPU), same data, same global batch.

Data: aspirin frames from an MMFF94 Langevin run (labels do not change the cost of an epoch).
Rows, each run as the user runs it (a fresh `mlff train`, 1 + --epochs epochs):
- 1 process, 1 thread (OMP_NUM_THREADS=1)
- 1 process, 2 threads (torch's intra-op threads on both cores)
- 2 processes (torchrun), 1 thread each (torchrun's default)
An epoch's time is log.csv's `seconds` (training steps and validation); the first epoch is left
out (start-up effects), the rest are averaged per run. Repeats are interleaved across the rows,
so a slow spell of the machine falls on every row; the ratios are taken per repeat. The final
weights of the 2-process runs are compared with the 1-process runs' (float32), next to what
2 threads instead of 1 change in one process (the same sums in another order).

    python benchmarks/ddp_training.py [--frames 320] [--epochs 3] [--repeats 3]
                                      [--arch painn] [--batch-size 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mlff_core.data.formats import write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.labels import get_level

BIN = Path(sys.executable).parent


def train(data: Path, run: Path, processes: int, threads: int, args) -> list[float]:
    """Seconds of each epoch after the first."""
    command = [str(BIN / "mlff"), "train", "--data", str(data), "--model", args.arch,
               "--epochs", str(args.epochs + 1), "--batch-size", str(args.batch_size),
               "--device", args.device, "-o", str(run)]
    if processes > 1:
        command = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes),
                   *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(run / "log.csv", newline="") as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)][1:]


def largest_difference(a: Path, b: Path) -> float:
    """Largest |Δ| between the raw weights of two runs' checkpoints."""
    left = torch.load(a / "checkpoint.pt", weights_only=True)["model"]
    right = torch.load(b / "checkpoint.pt", weights_only=True)["model"]
    return max(float((left[k] - right[k]).abs().max()) for k in left
               if left[k].dtype.is_floating_point)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after the first)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="painn")
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
            ("2 processes, 1 thread each", 2, 1)]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        frames = generate_frames(named_molecule("aspirin"), get_level("mmff94"), args.frames,
                                 LangevinSampling(stride=10, equilibration=50, seed=0))
        write_frames(frames, root / "aspirin.npz")
        print(f"{args.arch}, {args.frames} aspirin frames (90 % train), batch {args.batch_size}, "
              "float32, "
              f"{args.device}; s per epoch, mean of epochs 2–{args.epochs + 1} per run")
        times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
        differences, threads_differences = [], []
        for repeat in range(args.repeats):
            for name, processes, threads in rows:
                run = root / f"{repeat}-{processes}-{threads}"
                times[name].append(statistics.mean(train(root / "aspirin.npz", run, processes,
                                                         threads, args)))
                print(f"  repeat {repeat + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
            differences.append(largest_difference(root / f"{repeat}-2-1", root / f"{repeat}-1-1"))
            threads_differences.append(largest_difference(root / f"{repeat}-1-2",
                                                          root / f"{repeat}-1-1"))
    print(f"\n| {args.arch} | s per epoch (mean ± std, {args.repeats} runs) | vs 1 process, "
          "1 thread (per repeat) |\n|---|---|---|")
    base = times[rows[0][0]]
    for name, _, _ in rows:
        ratios = [b / t for b, t in zip(base, times[name], strict=True)]
        print(f"| {name} | {statistics.mean(times[name]):.2f} ± "
              f"{statistics.stdev(times[name]) if len(base) > 1 else 0:.2f} | "
              f"{' / '.join(f'{r:.2f}×' for r in ratios)} |")
    print(f"\nlargest |Δ weight|, 2 processes vs 1 (float32, after {args.epochs + 1} epochs): "
          f"{' / '.join(f'{d:.1e}' for d in differences)}; 1 process, 2 threads vs 1 thread "
          f"(the same sums in another order): "
          f"{' / '.join(f'{d:.1e}' for d in threads_differences)}")


if __name__ == "__main__":
    main()
