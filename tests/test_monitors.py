"""Collapse and exploration monitors: planted events are flagged exactly when they happen,
'stop' ends an ASE run with the last good frame on disk, flagged frames are relabel-ready."""

import numpy as np
import pytest
import torch
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from models_helpers import random_potential

from ase_bridge import CollapseObserver, ExplorationObserver
from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.export import model_metadata, save_model_file
from mlff_core.export.exploration import ExplorationModel
from mlff_core.labels import get_level
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.models import hyperparameters
from mlff_core.monitors import CollapseDetector, ExplorationDetector, MonitorTriggered


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
    moved[3] += 0.35 * (moved[3] - moved[0]) / np.linalg.norm(moved[3] - moved[0])
    assert not CollapseDetector.from_atoms(atoms, 0.5).check(moved, atoms.cell.array,
                                                             atoms.pbc).collapsed


def _md(atoms, steps, observers, plant_at=None):
    atoms.calc = get_level("mmff94").calculator(smiles="CCO")
    atoms.set_velocities(np.random.default_rng(1).normal(0, 0.002, atoms.positions.shape))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)

    def plant():
        if dynamics.nsteps == plant_at:
            atoms.positions[5] += 1.0 * (atoms.positions[5] - atoms.positions[0])

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
                                         flagged_path=tmp_path / "collapse.npz",
                                         last_good_path=tmp_path / "last_good.xyz")
        return holder["obs"]

    dynamics = _md(atoms, 200, [(make, 10)], plant_at=40)
    observer = holder["obs"]
    assert observer.stopped and dynamics.nsteps == 40  # stopped right after the planted step
    assert observer.monitor.first_flagged_step == 40
    last_good = read(tmp_path / "last_good.xyz")
    assert last_good.info["step"] == 30
    flagged = read_frames(tmp_path / "collapse.npz")
    assert flagged.n_frames == 1 and flagged.provenance["steps"] == [40]
    assert "bond 0-5" in flagged.provenance["reasons"][0]
    log = (tmp_path / "collapse.log").read_text().splitlines()
    assert [line.split("\t")[1] for line in log[1:]] == ["ok"] * 4 + ["FLAGGED"]
    observer.close()


def test_ase_collapse_observer_raise(tmp_path):
    atoms = named_molecule("ethanol").atoms
    with pytest.raises(MonitorTriggered, match="collapse at step 20"):
        _md(atoms, 100, [(lambda d: CollapseObserver(atoms, action="raise", dynamics=d), 5)],
            plant_at=20)


@pytest.fixture
def model_with_clusters(tmp_path):
    """A model file whose exploration clusters come from 300 K MMFF frames of ethanol."""
    from mlff_core.data.generate import LangevinSampling, generate_frames

    frames = generate_frames(named_molecule("ethanol"), get_level("mmff94"), 60,
                             LangevinSampling(temperature=300.0, stride=5, equilibration=20))
    clusters = ConformationClusters(n_clusters=2).fit(frames)
    potential = random_potential("schnet", species=(1, 6, 8))
    metadata = model_metadata(potential, "schnet", hyperparameters("schnet"),
                              exploration={"systems": [clusters.to_dict()]})
    path = save_model_file(potential, tmp_path / "m.pt", metadata,
                           ExplorationModel([clusters.to_dict()]))
    return path, frames


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
                                            flagged_path=tmp_path / "unexplored.npz")
        return holder["obs"]

    _md(atoms, 60, [(make, 10)], plant_at=30)
    observer = holder["obs"]
    assert observer.monitor.first_flagged_step == 30
    unexplored = read_frames(tmp_path / "unexplored.npz")
    assert unexplored.provenance["flagged_by"] == "exploration"
    assert 30 in unexplored.provenance["steps"]
    # ready for relabelling
    relabelled = relabel_frames(unexplored, get_level("gfn2"))
    assert relabelled.has_labels and isinstance(relabelled, Frames)
    assert torch.isfinite(torch.tensor(relabelled.forces)).all()
