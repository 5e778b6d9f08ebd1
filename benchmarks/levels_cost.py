"""Cost per frame of each level of theory for aspirin (21 atoms) on this machine.

Frames are consecutive configurations of a 500 K MMFF94 Langevin trajectory (stride 10 steps),
labelled one after another with a fresh calculator per level, as `mlff data relabel` does.
All levels are timed in the same run, so their ratios are comparable on a noisy machine.

    python benchmarks/levels_cost.py --frames 20 --dft-frames 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np

from mlff_core.data.generate import LangevinSampling, sample_langevin
from mlff_core.data.molecules import named_molecule
from mlff_core.labels import get_level
from mlff_core.labels.timing import label_seconds


def time_level(name: str, frames, n: int) -> dict:
    level = get_level(name)
    times = label_seconds(frames, level, n)
    steady = times[1:] if len(times) > 1 else times  # the first call includes set-up
    return {
        "level": level.tag,
        "frames": n,
        "first_call_s": times[0],
        "median_s": float(np.median(steady)),
        "mean_s": float(np.mean(steady)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--dft-frames", type=int, default=3)
    parser.add_argument("--dft", nargs="*", default=["dft:PBE/def2-SVP", "dft:B3LYP/def2-SVP"])
    parser.add_argument("--json")
    args = parser.parse_args()

    structure = named_molecule("aspirin")
    frames = sample_langevin(structure, get_level("mmff94"), max(args.frames, args.dft_frames),
                             LangevinSampling(temperature=500.0, stride=10, seed=0))
    rows = [time_level(name, frames, args.frames) for name in ("mmff94", "gfn1", "gfn2")]
    rows += [time_level(name, frames, args.dft_frames) for name in args.dft]
    reference = rows[0]["median_s"]
    print(f"aspirin (21 atoms), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"{'level':<22}{'frames':>7}{'median s/frame':>16}{'first call s':>14}{'× MMFF94':>10}")
    for row in rows:
        row["relative_to_mmff94"] = row["median_s"] / reference
        print(f"{row['level']:<22}{row['frames']:>7}{row['median_s']:>16.4g}"
              f"{row['first_call_s']:>14.4g}{row['relative_to_mmff94']:>10.3g}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
