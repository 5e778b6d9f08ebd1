"""Labelling throughput on a local Dask cluster: 1 worker against 2, and the serial path.

Frames come from MMFF94 Langevin runs (not timed). For each level of theory:
- serial: `relabel_frames` in this process, as before issue 14, with 1 thread and with all
  cores (xTB and PySCF use OpenMP threads);
- cluster: `label_frames_on_cluster` on a `LocalCluster` of 1 and of 2 worker processes (one
  thread each); chunks as `mlff data relabel` cuts them. Timed apart, not in the labelling
  time: the cluster's start-up, and a first one-frame task per worker (its imports).
The per-task overhead is (1-worker time − frames × serial 1-thread time per frame) / tasks,
from which the time on 100 workers is estimated on paper: tasks / 100 rounds of (frames per task
× time per frame + overhead), a model, not a measurement.

    python benchmarks/dask_labelling.py [--xtb-frames 128] [--dft-frames 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

from threadpoolctl import threadpool_limits
from timing import seconds

from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.distributed import dask_client, label_frames_on_cluster
from mlff_core.distributed.labelling import default_chunk_size
from mlff_core.labels import get_level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xtb-frames", type=int, default=128)
    parser.add_argument("--dft-frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = [("GFN2-xTB, aspirin", "aspirin", "gfn2", args.xtb_frames),
             ("DFT PBE/def2-SVP, ethanol", "ethanol", "dft", args.dft_frames)]
    cores = os.cpu_count() or 1
    print(f"{cores} cores; mean ± std over {args.repeats} repeats (cluster runs: labelling only, "
          "start-up apart)")
    for title, molecule, level_name, n in cases:
        level = get_level(level_name).require()
        frames = generate_frames(named_molecule(molecule), get_level("mmff94"), n,
                                 LangevinSampling(stride=10, equilibration=50, seed=0))
        chunk = default_chunk_size(level)
        tasks = math.ceil(n / chunk)
        rows = {}
        with threadpool_limits(1):
            rows["serial, 1 thread"] = [seconds(relabel_frames, frames, level)
                                        for _ in range(args.repeats)]
        rows[f"serial, {cores} threads"] = [seconds(relabel_frames, frames, level)
                                            for _ in range(args.repeats)]
        startups, warmups = [], []
        for workers in (1, 2):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                with dask_client(workers=workers) as client:
                    startups.append(time.perf_counter() - start)
                    # every worker imports the level's library once (PySCF: about a second)
                    warmups.append(seconds(label_frames_on_cluster, frames[:workers], level,
                                           client, chunk_size=1))
                    times.append(seconds(label_frames_on_cluster, frames, level, client,
                                         chunk_size=chunk))
            rows[f"Dask, {workers} worker{'s' if workers > 1 else ''}"] = times
        print(f"\n{title}: {n} frames, {tasks} tasks of {chunk} frame(s)")
        for name, times in rows.items():
            mean, std = statistics.mean(times), statistics.stdev(times) if len(times) > 1 else 0
            print(f"  {name:<22} {mean:8.2f} ± {std:5.2f} s   {n / mean:8.2f} frames/s")
        per_frame = statistics.mean(rows["serial, 1 thread"]) / n
        one = statistics.mean(rows["Dask, 1 worker"])
        two = statistics.mean(rows["Dask, 2 workers"])
        overhead = max(0.0, (one - n * per_frame) / tasks)
        print(f"  2 workers vs 1: {one / two:.2f}×; per frame {per_frame * 1e3:.1f} ms "
              f"(1 thread); overhead per task {overhead * 1e3:.1f} ms; cluster start-up "
              f"{statistics.mean(startups):.1f} s, then a first task per worker "
              f"{statistics.mean(warmups):.1f} s (its imports and one frame)")
        for frames_total in (1000, 100_000):
            many = math.ceil(frames_total / chunk)
            rounds = math.ceil(many / 100)
            estimate = rounds * (chunk * per_frame + overhead)
            print(f"  on paper, {frames_total:,} frames on 100 workers: {rounds} rounds of "
                  f"{chunk * per_frame + overhead:.2f} s = {estimate:.1f} s, against "
                  f"{frames_total * per_frame:.0f} s on one worker "
                  f"({frames_total * per_frame / estimate:.0f}×)")


if __name__ == "__main__":
    main()
