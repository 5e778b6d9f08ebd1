"""Labelled data from molecular dynamics: sample with one level of theory, label with another.

`generate_frames` runs Langevin MD (ASE) driven by a level of theory and keeps every `stride`-th
configuration after an equilibration period, labelled either by the driving level or by another
one (`label_level`). `relabel_frames` labels existing frames with a level — how cheap/accurate
pairs for ASTEROID are made. Everything is deterministic for a seed.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import units as ase_units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

from mlff_core.data.formats import frames_from_native_arrays, native_arrays
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import Structure
from mlff_core.data.partial import PartialRun
from mlff_core.errors import DataError, LevelOfTheoryError
from mlff_core.labels.levels import LevelOfTheory
from mlff_core.progress import Advance, attach_step_progress, no_progress
from mlff_core.runtime import package_versions

if TYPE_CHECKING:
    from mlff_core.distributed.labelling import Labeller


@dataclass(frozen=True)
class LangevinSampling:
    """How configurations are sampled.

    Attributes:
        temperature: thermostat temperature, K.
        timestep: MD time step, fs.
        friction: Langevin friction, 1/ps (the unit of every mlff command).
        stride: MD steps between two saved frames.
        equilibration: MD steps run before the first saved frame.
        seed: seeds the initial velocities and the thermostat noise.
    """

    temperature: float = 500.0
    timestep: float = 0.5
    friction: float = 10.0
    stride: int = 10
    equilibration: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise DataError(f"temperature must be positive, got {self.temperature} K")
        if self.timestep <= 0:
            raise DataError(f"timestep must be positive, got {self.timestep} fs")
        if self.stride < 1 or self.equilibration < 0:
            raise DataError("stride must be at least 1 and equilibration non-negative")

    def total_steps(self, n_frames: int) -> int:
        return self.equilibration + n_frames * self.stride


def _system_provenance(structure: Structure) -> dict:
    return {
        "name": structure.name,
        "formula": structure.atoms.get_chemical_formula(mode="hill"),
        "smiles": structure.smiles,
        "charge": structure.charge,
        "bonds": structure.bonds.tolist(),
    }


def _sampling_provenance(structure: Structure, level: LevelOfTheory,
                         sampling: LangevinSampling) -> dict:
    return {
        "system": _system_provenance(structure),
        "level_of_theory": level.tag,
        "sampling": {"method": "langevin", "driver_level": level.tag, **asdict(sampling)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_versions": package_versions(),
    }


def sample_langevin(
    structure: Structure,
    level: LevelOfTheory,
    n_frames: int,
    sampling: LangevinSampling = LangevinSampling(),
    advance: Advance = no_progress,
    partial: PartialRun | None = None,
    state: dict[str, np.ndarray] | None = None,
) -> Frames:
    """Langevin MD on `structure` driven by `level`; frames labelled by that same level.

    Args:
        n_frames: number of configurations to keep.
        advance: progress callback, called once per MD step.
        partial: where to save progress as it goes (frames so far, the MD state and the
            thermostat's random state), so that a killed run continues exactly: a resumed
            run gives the frames an uninterrupted one gives.
        state: what `partial.load()` returned for the sampling phase (None: start afresh).

    Returns:
        [n_frames] Frames with energies (eV) and forces (eV/Å) of the driving level.
    """
    if n_frames < 1:
        raise DataError(f"need at least one frame, got {n_frames}")
    if len(structure.atoms) < 2:
        raise DataError(f"{structure.name} is a single atom: it has no geometry to sample "
                        "(Langevin MD needs at least two atoms)")
    if structure.atoms.pbc.any() and not level.periodic:
        raise LevelOfTheoryError(f"{level.tag} cannot drive a periodic system; use gfn1 or gfn2")
    atoms = structure.atoms.copy()
    atoms.calc = level.calculator(smiles=structure.smiles, charge=structure.charge)
    rng = np.random.default_rng(sampling.seed)
    if state is None:
        thermalize_momenta(atoms, temperature_K=sampling.temperature, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # no drift, without Langevin's biased `fixcm`
    dynamics = Langevin(
        atoms,
        timestep=sampling.timestep * ase_units.fs,
        temperature_K=sampling.temperature,
        friction=sampling.friction / (1000.0 * ase_units.fs),
        fixcm=False,
        rng=rng,
    )

    positions, cells, energies, forces = [], [], [], []
    provenance = _sampling_provenance(structure, level, sampling)
    if state is not None:  # continue where the saved run stopped, bit for bit
        done = int(state["frames_done"])
        positions, cells = list(state["positions"][:done]), list(state["cells"][:done])
        energies, forces = list(state["energies"][:done]), list(state["forces"][:done])
        atoms.positions = state["md_positions"]
        atoms.set_momenta(state["md_momenta"], apply_constraint=False)
        rng.bit_generator.state = json.loads(str(state["rng_state"]))
        provenance = json.loads(str(state["provenance"]))
        advance(sampling.equilibration + done * sampling.stride)
    attach_step_progress(dynamics, advance)
    if not positions:
        dynamics.run(sampling.equilibration)

    def save_progress() -> None:
        assert partial is not None
        partial.save({"positions": np.array(positions), "cells": np.array(cells),
                      "energies": np.array(energies), "forces": np.array(forces),
                      "md_positions": atoms.positions, "md_momenta": atoms.get_momenta(),
                      "rng_state": np.array(json.dumps(rng.bit_generator.state)),
                      "provenance": np.array(json.dumps(provenance))},
                     len(positions), "sample")

    while len(positions) < n_frames:
        dynamics.run(sampling.stride)
        positions.append(atoms.positions.copy())
        cells.append(atoms.cell.array.copy())
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces(apply_constraint=False))  # FixCom alters forces
        if partial is not None and len(positions) < n_frames and partial.due(len(positions)):
            save_progress()

    return Frames(
        positions=np.stack(positions),
        atomic_numbers=atoms.numbers,
        energies=np.array(energies),
        forces=np.stack(forces),
        cell=np.stack(cells) if atoms.pbc.any() else None,
        pbc=atoms.pbc,
        levels=np.full(n_frames, level.tag),
        provenance=provenance,
    )


def relabel_frames(frames: Frames, level: LevelOfTheory, advance: Advance = no_progress,
                   partial: PartialRun | None = None,
                   state: dict[str, np.ndarray] | None = None) -> Frames:
    """The same configurations labelled by `level` (energies eV, forces eV/Å).

    The previous level is kept in the provenance under 'relabelled_from'. The SMILES and charge
    recorded by `generate_frames` are used when present (MMFF94 needs the bond graph; without
    it the bonds are perceived from the first frame's geometry). With `partial`, the labels
    are saved as they come (with the frames, so a resume needs nothing else); `state` is what
    `partial.load()` returned for the labelling phase.
    """
    calculator = level.calculator(**labelling_system(frames, level))
    energies = np.empty(frames.n_frames)
    forces = np.empty_like(frames.positions)
    done = 0
    if state is not None:
        done = int(state["frames_done"])
        energies[:done], forces[:done] = state["label_energies"], state["label_forces"]
        advance(done)
    for i in range(done, frames.n_frames):
        atoms = frames.to_atoms(i)
        atoms.calc = calculator
        try:
            energies[i] = atoms.get_potential_energy()
            forces[i] = atoms.get_forces()
        except LevelOfTheoryError as exc:
            raise LevelOfTheoryError(f"frame {i}: {exc}") from None
        advance(1)
        if partial is not None and i + 1 < frames.n_frames and partial.due(i + 1):
            partial.save({**native_arrays(frames), "label_energies": energies[:i + 1],
                          "label_forces": forces[:i + 1]}, i + 1, "label")
    return relabelled_frames(frames, energies, forces, level)


def labelling_system(frames: Frames, level: LevelOfTheory) -> dict:
    """The SMILES and charge `level`'s calculator needs for `frames` (from the provenance
    `generate_frames` records; None and 0 when absent).

    Raises:
        LevelOfTheoryError: `level` cannot label `frames` (periodic frames, molecular level).
    """
    if frames.is_periodic and not level.periodic:
        raise LevelOfTheoryError(f"{level.tag} cannot label periodic frames; use gfn1 or gfn2")
    system = frames.provenance.get("system", {})
    return {"smiles": system.get("smiles"), "charge": int(system.get("charge", 0))}


def relabelled_frames(frames: Frames, energies: np.ndarray, forces: np.ndarray,
                      level: LevelOfTheory) -> Frames:
    """`frames` with new labels (energies [frames] eV, forces [frames, atoms, 3] eV/Å) from
    `level`; the previous level is kept in the provenance under 'relabelled_from'."""
    relabelled = frames.with_labels(energies, forces, level.tag)
    provenance = copy.deepcopy(frames.provenance)
    provenance["relabelled_from"] = sorted(set(frames.levels.tolist()))
    provenance["level_of_theory"] = level.tag
    provenance.setdefault("package_versions", package_versions())
    relabelled.provenance = provenance
    return relabelled


def generate_frames(
    structure: Structure,
    level: LevelOfTheory,
    n_frames: int,
    sampling: LangevinSampling = LangevinSampling(),
    label_level: LevelOfTheory | None = None,
    advance: Advance = no_progress,
    partial: PartialRun | None = None,
    labeller: Labeller | None = None,
    chunks: Path | None = None,
) -> Frames:
    """Sample with `level` and label with `label_level` (default: the same level).

    `advance` is called once per MD step and, when relabelling, once per labelled frame.
    With `partial`, progress is saved as it goes and a saved run is continued (see
    `mlff_core.data.partial`); the caller removes it once the frames are written.
    With `labeller` (e.g. `mlff_core.distributed.cluster_labeller`), the relabelling is done by
    it, keeping its finished chunks in `chunks` (the sampled frames stay in `partial`).
    """
    state = partial.load() if partial is not None else None
    relabel = label_level is not None and label_level.key != level.key
    if state is not None and str(state["phase"]) == "label":
        frames = frames_from_native_arrays(state, partial.path)  # sampled before the stop
        advance(sampling.total_steps(n_frames))
    else:
        frames = sample_langevin(structure, level, n_frames, sampling, advance, partial, state)
        state = None
    if not relabel:
        return frames
    assert label_level is not None
    if partial is not None and state is None:  # the sampled frames, before any label
        empty = np.zeros((0, *frames.positions.shape[1:]))
        partial.save({**native_arrays(frames), "label_energies": np.zeros(0),
                      "label_forces": empty}, 0, "label")
    if labeller is not None:
        return labeller(frames, label_level, advance, chunks)
    return relabel_frames(frames, label_level, advance, partial, state)
