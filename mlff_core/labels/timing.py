"""How long a level of theory takes to label frames (for label budgets and cost tables)."""

from __future__ import annotations

import time

from mlff_core.data.frames import Frames
from mlff_core.labels.levels import LevelOfTheory


def label_seconds(frames: Frames, level: LevelOfTheory, n: int | None = None) -> list[float]:
    """Wall time of one energy + forces call of `level` on each of the first `n` frames (all by
    default), s, with one calculator as in a labelling run; the first call includes its set-up.
    The system's SMILES and charge recorded by `generate_frames` are used when present."""
    system = frames.provenance.get("system", {})
    calculator = level.calculator(smiles=system.get("smiles"),
                                  charge=int(system.get("charge", 0)))
    times = []
    for i in range(frames.n_frames if n is None else min(n, frames.n_frames)):
        atoms = frames.to_atoms(i)
        atoms.calc = calculator
        started = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(time.perf_counter() - started)
    return times
