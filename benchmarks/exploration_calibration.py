"""How the exploration monitor sees `make demo`'s frames, with the paper's radius and a calibrated
one, and why its own MD sits where it does.

    python benchmarks/exploration_calibration.py [demo-output] [--false-flag-rate 0.05]

Reads the demo's run (training and validation frames rebuilt from run.json), its held-out
GFN2-xTB trajectory (`aspirin_gfn2_test.npz`, an independent run) and the three engines' 1 ps
MD runs at 500 K. The clusters are refitted on the training frames as `mlff export` fits them
(same seed), once with max radii and once calibrated on the validation split. For each frame
set: median distance/radius and the fraction flagged under each rule. Diagnostics for the MD
frames: the same with a heavy-atom descriptor (H atoms left out: tests whether hydrogen
permutations, e.g. a rotating methyl group, drive the distance), the start structure's ratio,
and the mean bonded-length difference MD − training frames (Å).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import covalent_bonds
from mlff_core.data.trajectories import read_trajectory
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.training.run import training_frames


def heavy(frames):
    """The same frames without hydrogen atoms."""
    keep = frames.atomic_numbers != 1
    return Frames(positions=frames.positions[:, keep], atomic_numbers=frames.atomic_numbers[keep])


def equivalent_hydrogen_groups(frames) -> list[list[int]]:
    """Hydrogens bonded to the same heavy atom (e.g. a methyl group's three), groups of ≥ 2."""
    bonds = covalent_bonds(frames.to_atoms(0))
    parent: dict[int, list[int]] = {}
    for i, j in bonds:
        for h, x in ((i, j), (j, i)):
            if frames.atomic_numbers[h] == 1 and frames.atomic_numbers[x] != 1:
                parent.setdefault(int(x), []).append(int(h))
    return [sorted(group) for group in parent.values() if len(group) > 1]


def best_permutation_ratios(clusters, frames, groups) -> np.ndarray:
    """[F] the smallest distance/radius over every relabelling of the equivalent hydrogens
    (what a descriptor invariant to those permutations would give at most)."""
    orders = [np.arange(len(frames.atomic_numbers))]
    for group in groups:
        orders = [np.array(order) for base in orders
                  for order in _relabelled(base, group)]
    ratios = [clusters.classify(Frames(positions=frames.positions[:, order],
                                       atomic_numbers=frames.atomic_numbers))[1]
              for order in orders]
    return np.min(ratios, axis=0)


def _relabelled(base, group):
    for perm in itertools.permutations(group):
        order = base.copy()
        order[group] = base[list(perm)]
        yield order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", nargs="?", default="demo-output", type=Path)
    parser.add_argument("--false-flag-rate", type=float, default=0.05)
    args = parser.parse_args()
    demo = args.demo
    run = json.loads((demo / "runs" / "aspirin_painn" / "run.json").read_text())
    train = training_frames(run["data"])[0]
    val = training_frames(run["data"], "val")[0]
    sets = {
        "training": train,
        "validation": val,
        "held-out GFN2 run": read_frames(demo / "aspirin_gfn2_test.npz"),
        "start structure": read_frames(demo / "aspirin_start.xyz"),
        "ASE MD": read_trajectory(demo / "md_ase" / "trajectory.traj"),
        "OpenMM MD": read_trajectory(demo / "md_openmm" / "trajectory.dcd",
                                     demo / "md_openmm" / "start.pdb"),
        "LAMMPS MD": read_trajectory(demo / "md_lammps" / "trajectory.lammpstrj"),
    }
    # Molecules (the LAMMPS dump carries its box; its coordinates are unwrapped), in the
    # training order of atoms (every engine keeps it).
    sets = {name: Frames(positions=frames.positions, atomic_numbers=frames.atomic_numbers)
            for name, frames in sets.items()}
    for name, frames in sets.items():
        if not np.array_equal(frames.atomic_numbers, train.atomic_numbers):
            sys.exit(f"{name}: atoms differ from the training frames")
    maximum = ConformationClusters().fit(train)
    calibrated = ConformationClusters().fit(train).calibrate(val, args.false_flag_rate)
    heavy_max = ConformationClusters().fit(heavy(train))
    scale = calibrated.radius_rule_["scale"]
    print(f"{maximum.n_clusters_} clusters (silhouette), {train.n_frames} training, "
          f"{val.n_frames} validation frames; calibrated scale {scale:.3f} "
          f"(target {args.false_flag_rate:.0%})")
    groups = equivalent_hydrogen_groups(train)
    print(f"equivalent hydrogens (bonded to one heavy atom): {groups}")
    print(f"{'frames':<20}{'n':>5}{'median ratio':>14}{'flagged max':>13}"
          f"{'flagged cal.':>14}{'heavy: median':>15}{'flagged':>9}{'best H perm.':>14}"
          f"{'flagged':>9}")
    for name, frames in sets.items():
        ratio_max = maximum.classify(frames)[1]
        ratio_cal = calibrated.classify(frames)[1]
        ratio_heavy = heavy_max.classify(heavy(frames))[1]
        ratio_perm = best_permutation_ratios(maximum, frames, groups)
        print(f"{name:<20}{frames.n_frames:>5}{np.median(ratio_max):>14.2f}"
              f"{np.mean(ratio_max > 1):>13.0%}{np.mean(ratio_cal > 1):>14.0%}"
              f"{np.median(ratio_heavy):>15.2f}{np.mean(ratio_heavy > 1):>9.0%}"
              f"{np.median(ratio_perm):>14.2f}{np.mean(ratio_perm > 1):>9.0%}")
    bonds = covalent_bonds(train.to_atoms(0))

    def mean_lengths(frames):
        vectors = frames.positions[:, bonds[:, 1]] - frames.positions[:, bonds[:, 0]]
        return np.linalg.norm(vectors, axis=-1).mean(axis=0)

    reference = mean_lengths(train)
    print("\nmean bonded length − training mean (Å), over the molecule's "
          f"{len(bonds)} bonds: mean | largest")
    for name in ("held-out GFN2 run", "start structure", "ASE MD", "OpenMM MD", "LAMMPS MD"):
        delta = mean_lengths(sets[name]) - reference
        worst = int(np.argmax(np.abs(delta)))
        i, j = bonds[worst]
        symbols = train.to_atoms(0).get_chemical_symbols()
        print(f"  {name:<20}{delta.mean():+.4f} | {delta[worst]:+.4f} "
              f"({symbols[i]}{i}-{symbols[j]}{j})")


if __name__ == "__main__":
    main()
