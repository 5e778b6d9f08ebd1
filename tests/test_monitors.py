"""Collapse and exploration monitors: planted events are flagged exactly when they happen,
'stop' ends an ASE run with the last good frame on disk, flagged frames are relabel-ready."""

import numpy as np
import pytest
import torch
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from models_helpers import ethanol_md_frames, save_model_with_clusters

from ase_bridge import CollapseObserver, ExplorationObserver
from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import relabel_frames
from mlff_core.data.molecules import covalent_bonds, named_molecule
from mlff_core.errors import MLFFError
from mlff_core.labels import get_level
from mlff_core.monitors import (
    CollapseDetector,
    ExplorationDetector,
    Monitor,
    Snapshot,
)


def test_collapse_detector_flags_the_planted_frame_and_not_before():
    atoms = named_molecule("ethanol").atoms
    rng = np.random.default_rng(0)
    detector = CollapseDetector.from_atoms(atoms, threshold=0.5)
    flagged = []
    for frame in range(20):
        positions = atoms.positions + rng.normal(0, 0.03, atoms.positions.shape)
        if frame >= 12:  # pull one hydrogen 0.8 Å away from its carbon
            positions[5] += 0.8 * (positions[5] - positions[0]) / np.linalg.norm(
                positions[5] - positions[0])
        flagged.append(detector.check(positions).collapsed)
    assert flagged.index(True) == 12 and all(flagged[12:]) and not any(flagged[:12])
    result = detector.check(positions)
    assert result.bond == (0, 5) and result.max_deviation == pytest.approx(0.8, abs=0.12)


def test_threshold_option_and_periodic_minimum_image():
    atoms = named_molecule("ethanol").atoms
    atoms.set_cell(np.eye(3) * 12.0)
    atoms.pbc = True
    detector = CollapseDetector.from_atoms(atoms, threshold=0.3)
    moved = atoms.positions.copy()
    moved[3] += [12.0, 0, -12.0]  # a lattice vector: same bond length
    assert not detector.check(moved, atoms.cell.array, atoms.pbc).collapsed
    bond = atoms.positions[3] - atoms.positions[0]  # the bond itself, not across the box
    moved[3] += 0.35 * bond / np.linalg.norm(bond)
    strict = detector.check(moved, atoms.cell.array, atoms.pbc)
    assert strict.collapsed and strict.bond == (0, 3)  # 0.3 Å (JCP) flags a 0.35 Å stretch
    assert strict.max_deviation == pytest.approx(0.35, abs=1e-9)
    assert not CollapseDetector.from_atoms(atoms, 0.5).check(moved, atoms.cell.array,
                                                             atoms.pbc).collapsed  # MDsim's


def test_bonds_are_pairs_closer_than_radii_plus_0_3():
    """r_i + r_j + 0.3 Å (as the LAMMPS fix), not ASE NeighborList's r_i + r_j + 2 × 0.3."""
    from ase import Atoms
    from ase.data import covalent_radii

    limit = covalent_radii[8] + covalent_radii[1] + 0.3  # O–H: 0.97 + 0.3 Å
    for distance, bonded in ((limit - 1e-3, True), (limit + 1e-3, False), (1.5, False)):
        pair = Atoms("OH", positions=[[0, 0, 0], [distance, 0, 0]])
        assert len(covalent_bonds(pair)) == int(bonded), distance
    box = Atoms("OH", positions=[[0.2, 0, 0], [9.9, 0, 0]], cell=np.eye(3) * 10.0, pbc=True)
    assert covalent_bonds(box).tolist() == [[0, 1]]  # 0.3 Å apart across the boundary


def test_non_finite_positions_or_forces_are_a_collapse():
    atoms = named_molecule("ethanol").atoms
    detector = CollapseDetector.from_atoms(atoms)
    positions = atoms.positions.copy()
    forces = np.zeros_like(positions)
    assert not detector.check(positions, forces=forces).collapsed
    forces[4, 1] = np.inf
    result = detector.check(positions, forces=forces)
    assert result.collapsed and result.describe() == \
        "atom 4 has a non-finite force (NaN or inf)"
    positions[2, 0] = np.nan
    result = detector.check(positions, forces=forces)  # positions are named first
    assert result.collapsed and result.describe() == \
        "atom 2 has a non-finite position (NaN or inf)"


def test_flagged_frames_stream_and_survive_a_killed_run(tmp_path):
    """A run killed (SIGKILL) after 5 flagged frames leaves a file with exactly those 5."""
    import subprocess
    import sys

    script = f"""
import os, signal, numpy as np
from mlff_core.monitors import Monitor, Snapshot
monitor = Monitor("collapse", "flag", flagged_path={str(tmp_path / 'flagged.xyz')!r})
for step in range(5):
    monitor.observe(Snapshot(step, np.full((3, 3), float(step)) + np.eye(3), np.array([8, 1, 1])),
                    True, f"planted {{step}}")
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    frames = read(tmp_path / "flagged.xyz", index=":")
    assert [f.info["step"] for f in frames] == [0, 1, 2, 3, 4]
    assert frames[3].info["reason"] == "planted 3" and not frames[3].pbc.any()
    assert read_frames(tmp_path / "flagged.xyz").n_frames == 5  # as `mlff data relabel` reads


def test_monitor_arguments_are_validated(tmp_path):
    with pytest.raises(MLFFError, match="path ending in .xyz"):
        Monitor("collapse", flagged_path=tmp_path / "flagged.npz")
    with pytest.raises(MLFFError, match="unknown monitor action 'halt'"):
        Monitor("collapse", "halt")
    assert not (tmp_path / "flagged.npz").exists()


def _stretch_bond_0_5(atoms):
    atoms.positions[5] += 1.0 * (atoms.positions[5] - atoms.positions[0])


def _md(atoms, steps, observers, plant_at=None, plant_event=_stretch_bond_0_5):
    """MMFF94 velocity Verlet of ethanol; `plant_event(atoms)` after step `plant_at`."""
    atoms.calc = get_level("mmff94").calculator(smiles="CCO")
    atoms.set_velocities(np.random.default_rng(1).normal(0, 0.002, atoms.positions.shape))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)

    def plant():
        if dynamics.nsteps == plant_at:
            plant_event(atoms)

    if plant_at is not None:
        dynamics.attach(plant, interval=1)
    for make, interval in observers:
        dynamics.attach(make(dynamics), interval=interval)
    dynamics.run(steps)
    return dynamics


def test_ase_collapse_observer_stop_saves_last_good_frame(tmp_path):
    atoms = named_molecule("ethanol").atoms
    holder = {}

    def make(dynamics):
        holder["obs"] = CollapseObserver(atoms, action="stop", dynamics=dynamics,
                                         log=tmp_path / "collapse.log",
                                         flagged_path=tmp_path / "collapse.xyz",
                                         last_good_path=tmp_path / "last_good.xyz")
        return holder["obs"]

    dynamics = _md(atoms, 200, [(make, 10)], plant_at=40)
    observer = holder["obs"]
    assert observer.stopped and dynamics.nsteps == 40  # stopped right after the planted step
    assert observer.monitor.first_flagged_step == 40
    last_good = read(tmp_path / "last_good.xyz")
    assert last_good.info["step"] == 30
    flagged = read(tmp_path / "collapse.xyz", index=":")
    assert len(flagged) == 1 and flagged[0].info["step"] == 40
    assert flagged[0].info["reason"].startswith("bond 0-5 is ")
    assert flagged[0].info["flagged_by"] == "collapse"
    log = (tmp_path / "collapse.log").read_text().splitlines()
    assert [line.split("\t")[1] for line in log[1:]] == ["ok"] * 4 + ["FLAGGED"]
    assert all(line.split("\t")[2].startswith("collapse: bond ") for line in log[1:])
    observer.close()


def test_ase_run_that_turns_nan_stops_cleanly_with_the_last_good_frame(tmp_path):
    """NaN planted in one coordinate at step 30: the check at step 30 stops the run."""
    atoms = named_molecule("ethanol").atoms
    holder = {}

    def make(dynamics):
        holder["obs"] = CollapseObserver(atoms, action="stop", dynamics=dynamics,
                                         log=tmp_path / "collapse.log",
                                         last_good_path=tmp_path / "last_good.xyz")
        return holder["obs"]

    def poison(atoms):
        atoms.positions[3, 1] = np.nan

    dynamics = _md(atoms, 100, [(make, 10)], plant_at=30, plant_event=poison)
    observer = holder["obs"]
    assert observer.stopped and dynamics.nsteps == 30
    assert observer.monitor.first_flagged == (30, "atom 3 has a non-finite position (NaN or inf)")
    assert read(tmp_path / "last_good.xyz").info["step"] == 20
    observer.close()


@pytest.fixture
def model_with_clusters(tmp_path):
    """A model file whose exploration clusters come from 300 K MMFF frames of ethanol."""
    frames = ethanol_md_frames()
    return save_model_with_clusters(tmp_path / "m.pt", frames), frames


def test_exploration_detector_and_observer(tmp_path, model_with_clusters):
    path, frames = model_with_clusters
    detector = ExplorationDetector(path)
    inside = detector.check(frames.positions[3], frames.atomic_numbers)
    assert inside.status == "explored"
    stretched = frames.positions[3].copy()
    stretched[5] += 1.5 * (stretched[5] - stretched[0])
    assert detector.check(stretched, frames.atomic_numbers).status == "unexplored"
    water = detector.check(np.zeros((3, 3)) + np.eye(3), np.array([8, 1, 1]))
    assert water.status == "no reference clusters"

    atoms = frames.to_atoms(3)
    holder = {}

    def make(dynamics):
        holder["obs"] = ExplorationObserver(atoms, path, dynamics=dynamics,
                                            flagged_path=tmp_path / "unexplored.xyz")
        return holder["obs"]

    _md(atoms, 60, [(make, 10)], plant_at=30)
    observer = holder["obs"]
    assert observer.monitor.first_flagged_step == 30
    assert 30 in [f.info["step"] for f in read(tmp_path / "unexplored.xyz", index=":")]
    unexplored = read_frames(tmp_path / "unexplored.xyz")
    # ready for relabelling
    relabelled = relabel_frames(unexplored, get_level("gfn2"))
    assert relabelled.has_labels and isinstance(relabelled, Frames)
    assert torch.isfinite(torch.tensor(relabelled.forces)).all()


def test_warn_and_stop_levels_grade_the_ratio(model_with_clusters):
    path, frames = model_with_clusters
    ratio = ExplorationDetector(path).check(frames.positions[3], frames.atomic_numbers).ratio
    assert 0 < ratio < 1
    cases = {  # (warn, stop) → (flagged, above stop), levels placed around this frame's ratio
        (1.0, None): (False, False),
        (0.5 * ratio, None): (True, True),  # stop defaults to warn
        (0.5 * ratio, 2 * ratio): (True, False),
        (0.5 * ratio, 0.9 * ratio): (True, True),
    }
    for (warn, stop), expected in cases.items():
        check = ExplorationDetector(path, warn, stop).check(frames.positions[3],
                                                            frames.atomic_numbers)
        assert (check.flagged, check.above_stop) == expected, (warn, stop)
        assert check.status == "explored" and check.ratio == pytest.approx(ratio)
    for warn, stop, words in ((0.0, None, "warn_ratio must be a positive number"),
                              (1.0, 0.5, r"stop_ratio \(0.5\) must be at least warn_ratio"),
                              (float("nan"), None, "warn_ratio must be")):
        with pytest.raises(MLFFError, match=words):
            ExplorationDetector(path, warn, stop)


def test_a_monitor_acts_only_on_frames_above_its_stop_level(tmp_path):
    monitor = Monitor("exploration", "stop", last_good_path=tmp_path / "good.xyz")
    frame = Snapshot(0, np.zeros((2, 3)) + np.eye(3)[:2], np.array([1, 1]))
    assert not monitor.observe(frame, False, "explored")
    warned = Snapshot(10, frame.positions, frame.atomic_numbers)
    assert not monitor.observe(warned, True, "warned", act=False)  # flagged, no stop
    assert monitor.n_flagged == 1 and not monitor.stopped and monitor.stop_reason is None
    assert monitor.last_good.step == 0  # a warned frame is not a good one
    assert monitor.observe(Snapshot(20, frame.positions, frame.atomic_numbers), True, "far",
                           act=True)
    assert monitor.outcome == {"stopped": True, "reason": "exploration: far",
                               "last_good": str(tmp_path / "good.xyz")}
    assert read(tmp_path / "good.xyz").info["step"] == 0
    monitor.close()


def test_molecule_in_a_periodic_box_is_classified_as_the_molecule(model_with_clusters):
    """As the LAMMPS fix does: a molecular model classifies a molecule in a box, even when
    the molecule straddles the boundary (it is made whole first)."""
    path, frames = model_with_clusters
    detector = ExplorationDetector(path)
    free = detector.check(frames.positions[7], frames.atomic_numbers)
    cell = np.eye(3) * 20.0
    x = frames.positions[7][:, 0]
    wrapped = frames.positions[7] + [20.0 - 0.5 * (x.min() + x.max()), 10.0, 10.0]
    wrapped = wrapped % 20.0  # centred on the x face: part of the molecule wraps over
    assert np.ptp(wrapped[:, 0]) > 10.0
    boxed = detector.check(wrapped, frames.atomic_numbers, cell, np.ones(3, dtype=bool))
    assert boxed.status == free.status and boxed.cluster == free.cluster
    assert boxed.ratio == pytest.approx(free.ratio, rel=1e-9)
