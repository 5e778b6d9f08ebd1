"""What two busy cores cost each other on this machine: the ceiling of a 2-rank speed-up.

One 1-rank LAMMPS run (pair_style mlff halo yes, the SchNet of lammps_speed.py, float32, one
thread) of half the 4k water box, alone on core 0, then two of them at the same time on cores
0 and 1 (taskset), with no communication between them. Two independent halves give the best a
2-rank run of the whole box can do here: (1-rank time of the whole box) / (time of a half
while the other half runs).

    python benchmarks/core_contention.py [--pairs 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from ase.io import write

sys.path.insert(0, str(Path(__file__).parent))
import mlff_lammps  # noqa: E402
from lammps_speed import nve_deck  # noqa: E402
from model_speed import water_structure  # noqa: E402

from mlff_core.export import model_metadata, save_model_file  # noqa: E402
from mlff_core.models import build_potential, hyperparameters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores")
    overrides = {"hidden": 64, "num_interactions": 2, "cutoff": 4.0}  # lammps_speed's SchNet
    lmp = Path(__import__("lammps").__file__).parent / "lmp"
    environment = dict(os.environ, OMP_NUM_THREADS="1",
                       LD_LIBRARY_PATH=str(Path(sys.prefix) / "lib"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        potential = build_potential("schnet", [1, 8], **overrides).float()
        model = save_model_file(potential, work / "m.pt", model_metadata(
            potential, "schnet", hyperparameters("schnet", **overrides)))
        atoms = water_structure(667)  # half of lammps_speed's 4k box
        write(work / "half.data", atoms, format="lammps-data", specorder=["H", "O"],
              masses=True, units="metal")
        (work / "in.half").write_text(nve_deck(mlff_lammps.plugin_path(), model,
                                                 work / "half.data", args.steps))

        def start(core: int) -> subprocess.Popen:
            return subprocess.Popen(["taskset", "-c", str(core), str(lmp), "-in", "in.half",
                                     "-log", "none"], stdout=subprocess.PIPE, text=True,
                                    env=environment, cwd=work)

        def step_ms(process: subprocess.Popen) -> float:
            out = process.communicate()[0]
            seconds, steps = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) "
                                        r"steps", out)[-1]
            return float(seconds) / int(steps) * 1e3

        print(f"{len(atoms)} atoms per run, {args.steps} steps")
        for _ in range(args.pairs):
            alone = step_ms(start(0))
            both = [step_ms(p) for p in (start(0), start(1))]
            print(f"alone {alone:.1f} ms/step; two at once {both[0]:.1f}, {both[1]:.1f} "
                  f"ms/step; slowdown {max(both) / alone:.3f}", flush=True)


if __name__ == "__main__":
    main()
