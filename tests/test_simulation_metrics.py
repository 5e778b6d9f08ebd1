"""Simulation metrics against hand-computed cases, and trajectory readers (DCD via mdtraj,
LAMMPS text dumps, ASE trajectories)."""

import numpy as np
import pytest
from ase.io import write as ase_write

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.data.trajectories import read_trajectory
from mlff_core.errors import DataError
from mlff_core.metrics import simulation


def _rotations(n, seed=0):
    from models_helpers import random_rotation

    rng = np.random.default_rng(seed)
    return [random_rotation(rng) for _ in range(n)]


def test_h_of_r_of_a_diatomic_is_a_peak_at_the_bond_length():
    frames = Frames(positions=np.array([[[0, 0, 0], [1.234, 0, 0]]] * 3, dtype=float),
                    atomic_numbers=[1, 1])
    centres, h = simulation.distance_distribution(frames)
    assert len(h) == 500 and centres[-1] == pytest.approx(9.99)
    assert centres[np.argmax(h)] == pytest.approx(1.23)  # the 1.22-1.24 Å bin
    assert h.sum() * 0.02 == pytest.approx(1.0)  # density-normalised
    assert simulation.hr_mae(h, h) == 0.0
    shifted = Frames(positions=np.array([[[0, 0, 0], [2.5, 0, 0]]], dtype=float),
                     atomic_numbers=[1, 1])
    _, h2 = simulation.distance_distribution(shifted)
    assert simulation.hr_mae(h, h2) == pytest.approx(2 * 50.0 / 500)  # two bins of height 50


def test_rmsd_rmsf_of_a_rigid_body_are_zero_and_of_a_vibration_are_known():
    atoms = named_molecule("ethanol").atoms
    positions = np.stack([atoms.positions @ r.T + 3.0 for r in _rotations(6)])
    rmsd, rmsf = simulation.rmsd_rmsf(Frames(positions=positions,
                                             atomic_numbers=atoms.numbers))
    assert np.abs(rmsd).max() < 1e-3 and np.abs(rmsf).max() < 1e-3
    # One atom oscillating ±a: before superposition its RMSF is a; the fit onto the other
    # eight atoms takes up a little of it (about a/9 from the centroid alone).
    wobble = np.repeat(atoms.positions[None], 40, axis=0)
    wobble[:, 5, 0] += 0.05 * np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    _, rmsf = simulation.rmsd_rmsf(Frames(positions=wobble, atomic_numbers=atoms.numbers))
    assert int(np.argmax(rmsf)) == 5 and 0.035 < rmsf[5] <= 0.05
    assert np.median(rmsf) < 0.01


def test_contact_map_and_stability():
    frames = Frames(positions=np.array([[[0, 0, 0], [1.0, 0, 0], [5, 0, 0]],
                                        [[0, 0, 0], [4.0, 0, 0], [5, 0, 0]]], dtype=float),
                    atomic_numbers=[6, 1, 8])
    contacts = simulation.contact_map(frames, cutoff=3.0)
    assert contacts[0, 1] == 0.5 and contacts[1, 2] == 0.5 and contacts[0, 2] == 0.0
    stable = simulation.stability(frames, threshold=0.5)
    assert stable["collapsed"] and stable["frames_before_collapse"] == 1


def test_rdf_of_water_has_the_hydrogen_bond_and_covalent_peaks():
    atoms = water_box(64).atoms
    r, curves = simulation.radial_distribution(Frames.from_atoms([atoms]), r_max=6.0)
    oh = curves["H-O"]
    assert r[np.argmax(oh)] == pytest.approx(0.96, abs=0.05)  # O-H covalent bond
    oo = curves["O-O"]
    assert 2.5 < r[np.argmax(oo)] < 3.1  # first O-O shell


def test_exploration_statistics():
    ratios = np.array([0.5, 0.9, 1.5, np.nan])
    forces = np.zeros((4, 2, 3))
    forces[2] = 3.0
    result = simulation.exploration_statistics(ratios, forces)
    assert result["explored_ratio"] == pytest.approx(2 / 3)
    assert result["mean_force_explored"] == 0.0
    assert result["mean_force_unexplored"] == pytest.approx(np.sqrt(27))


def test_dcd_with_topology_and_lammps_dump(tmp_path):
    import mdtraj

    atoms = named_molecule("ethanol").atoms
    positions = np.stack([atoms.positions + 0.01 * k for k in range(5)])
    ase_write(tmp_path / "start.pdb", atoms)
    top = mdtraj.load(str(tmp_path / "start.pdb")).topology
    mdtraj.Trajectory(positions / 10.0, top).save_dcd(str(tmp_path / "run.dcd"))
    frames = read_trajectory(tmp_path / "run.dcd", topology=tmp_path / "start.pdb")
    np.testing.assert_allclose(frames.positions, positions, atol=1e-3)  # DCD stores float32
    np.testing.assert_array_equal(frames.atomic_numbers, atoms.numbers)
    with pytest.raises(DataError, match="coordinates only: give the topology"):
        read_trajectory(tmp_path / "run.dcd")

    # A LAMMPS text dump (types 1, 2, 3 = C, H, O), written here by hand.
    types = {6: 1, 1: 2, 8: 3}
    lines = []
    for step, frame in enumerate(positions):
        lines += ["ITEM: TIMESTEP", str(step * 10), "ITEM: NUMBER OF ATOMS", str(len(atoms)),
                  "ITEM: BOX BOUNDS pp pp pp", "-20 20", "-20 20", "-20 20",
                  "ITEM: ATOMS id type x y z"]
        lines += [f"{i + 1} {types[z]} {x:.6f} {y:.6f} {w:.6f}"
                  for i, (z, (x, y, w)) in enumerate(zip(atoms.numbers, frame, strict=True))]
    (tmp_path / "run.lammpstrj").write_text("\n".join(lines) + "\n")
    dumped = read_trajectory(tmp_path / "run.lammpstrj", type_map=["C", "H", "O"])
    np.testing.assert_allclose(dumped.positions, positions, atol=1e-5)
    np.testing.assert_array_equal(dumped.atomic_numbers, atoms.numbers)
    with pytest.raises(DataError, match=r"atom type\(s\) \[3\] have no element"):
        read_trajectory(tmp_path / "run.lammpstrj", type_map=["C", "H"])

    write_frames(Frames(positions=positions, atomic_numbers=atoms.numbers), tmp_path / "r.traj")
    assert read_trajectory(tmp_path / "r.traj").n_frames == 5
