"""Exploration MD and ASTEROID's γ candidates as Dask tasks: this process against a local
cluster of 1 and of 2 workers (one thread each).

- MD: the runs of one `mlff active-learn` pass (ASE engine, Langevin at 500 K, collapse monitor
  on), with a SchNet trained for a few epochs on MMFF94 aspirin frames; `serial_md_runner`
  (1 thread) against `cluster_md_runner`.
- ASTEROID: `asteroid()` with a grid of 4 γ on MMFF94 (cheap) and GFN2-xTB (accurate) ethanol
  labels; the serial path (1 thread) against `task_map=cluster_map(client)`. Stage 1 runs in
  this process in both; the figure is the whole call.
This process runs on 1 thread throughout (its serial rows, and stage 1 of every ASTEROID row).
The cluster's start-up and a first task per worker (imports) are timed apart. Repeats are
interleaved; mean ± std.

    python benchmarks/dask_tasks.py [--runs 8] [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits
from timing import seconds

from mlff_core.data.formats import write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.distributed import (
    MDRun,
    cluster_map,
    cluster_md_runner,
    dask_client,
    serial_md_runner,
)
from mlff_core.export import export_run
from mlff_core.labels import get_level
from mlff_core.training import TrainingConfig, make_trainer
from mlff_core.training.asteroid import AsteroidSettings, asteroid


def md_runs(model: Path, start: Path, out: Path, runs: int, steps: int) -> list[MDRun]:
    return [MDRun(f"run{k}", str(model), str(start), str(out / f"run{k}"),
                  {"temperature": 500.0, "timestep": 0.5, "steps": steps, "report_interval": 20,
                   "friction": 1.0, "bond_threshold": 0.5, "action": "stop", "seed": k})
            for k in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # this process as one worker: 1 thread (stage 1 too)
    with tempfile.TemporaryDirectory() as scratch, threadpool_limits(1):
        root = Path(scratch)
        aspirin = generate_frames(named_molecule("aspirin"), get_level("mmff94"), 200,
                                  LangevinSampling(stride=10, equilibration=50, seed=0))
        data = write_frames(aspirin, root / "aspirin.npz")
        config = TrainingConfig(architecture="schnet", epochs=10, batch_size=16,
                                learning_rate=1e-3, hyperparameters={"hidden": 32})
        make_trainer(config, root / "run", [data]).fit()
        model = export_run(root / "run", root / "model.pt", n_clusters=2)
        start = write_frames(aspirin[[0]], root / "start.xyz")

        ethanol = generate_frames(named_molecule("ethanol"), get_level("mmff94"), 360,
                                  LangevinSampling(stride=5, equilibration=50, seed=1))
        accurate = write_frames(relabel_frames(ethanol[:60], get_level("gfn2")),
                                root / "acc.npz")
        cheap = write_frames(ethanol[60:], root / "cheap.npz")
        settings = AsteroidSettings(
            config=TrainingConfig(architecture="schnet", hyperparameters={"hidden": 32},
                                  epochs=15, batch_size=16),
            finetune_epochs=10, gammas=(0.1, 0.5, 1.0, 2.0), cost_ratio=10.0)

        rows = {"MD, this process": [], "MD, 1 worker": [], "MD, 2 workers": [],
                "ASTEROID, this process": [], "ASTEROID, 1 worker": [],
                "ASTEROID, 2 workers": []}
        clients = {}
        with contextlib.ExitStack() as stack:
            for workers in (1, 2):
                started = time.perf_counter()
                clients[workers] = stack.enter_context(dask_client(workers=workers))
                clients[workers].run(lambda: __import__("mlff_core.training.asteroid"))
                print(f"{workers} worker(s): cluster up and imports done in "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
            for repeat in range(args.repeats):
                out = root / f"r{repeat}"
                rows["MD, this process"].append(seconds(
                    serial_md_runner, "ase",
                    md_runs(model, start, out / "md0", args.runs, args.steps)))
                rows["ASTEROID, this process"].append(seconds(
                    asteroid, [accurate], out / "ast0", settings, cheap=[cheap]))
                for workers, client in clients.items():
                    rows[f"MD, {workers} worker{'s' if workers > 1 else ''}"].append(seconds(
                        cluster_md_runner(client), "ase",
                        md_runs(model, start, out / f"md{workers}", args.runs, args.steps)))
                    rows[f"ASTEROID, {workers} worker{'s' if workers > 1 else ''}"].append(
                        seconds(asteroid, [accurate], out / f"ast{workers}", settings,
                                cheap=[cheap], task_map=cluster_map(client)))
                print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s"
                                                           for k, v in rows.items()), flush=True)
    print(f"\n{args.runs} MD runs × {args.steps} steps (aspirin, SchNet 32, ASE); ASTEROID: 4 γ, "
          f"stage 1 + 4 × (stage 2 + stage 3), ethanol 60 GFN2-xTB + 300 MMFF94 frames")
    print("| | s (mean ± std) |\n|---|---|")
    for name, values in rows.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {statistics.mean(values):.1f} ± {spread:.1f} |")
    for kind in ("MD", "ASTEROID"):
        ratios = [a / b for a, b in zip(rows[f"{kind}, 1 worker"], rows[f"{kind}, 2 workers"],
                                        strict=True)]
        print(f"{kind}: 2 workers ÷ 1 worker per repeat: "
              + " / ".join(f"{r:.2f}×" for r in ratios))


if __name__ == "__main__":
    main()
