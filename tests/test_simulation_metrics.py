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
    # MDsim: r_max · mean |Δh| = ∫ |Δh| dr; two disjoint peaks of area 1 each differ by 2
    assert simulation.hr_mae(h, h2) == pytest.approx(2.0)
    # one histogram of every frame's distances: a frame at 1.01 Å and one at 3.01 Å give two
    # peaks of half the area each (height 0.5 / 0.02 = 25)
    two = Frames(positions=np.array([[[0, 0, 0], [1.01, 0, 0]], [[0, 0, 0], [3.01, 0, 0]]]),
                 atomic_numbers=[1, 1])
    centres, h3 = simulation.distance_distribution(two)
    assert sorted(np.flatnonzero(h3).tolist()) == [50, 150] and h3[50] == pytest.approx(25.0)
    assert simulation.hr_mae(h3, h) == pytest.approx(0.5 + 0.5 + 1.0)  # 25 vs 0, 25 vs 0, 0 vs 50


def _simple_cubic(spacing, cells, element=18):
    """Atoms of a simple cubic lattice (`cells`³ sites) in its periodic box."""
    from ase import Atoms

    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return Atoms(numbers=[element] * len(grid), positions=grid * spacing,
                 cell=np.eye(3) * spacing * cells, pbc=True)


def test_rdf_normalisation_counts_the_neighbours_of_a_simple_cubic_lattice():
    atoms = _simple_cubic(3.0, 4)  # 64 atoms, 12 Å box: r_max 6 Å is half the box
    r, curves = simulation.radial_distribution(Frames.from_atoms([atoms]))
    assert len(r) == 500 and list(curves) == ["Ar-Ar"]
    g = curves["Ar-Ar"]
    rho, width = 64 / 12.0 ** 3, 6.0 / 500
    shells = 4.0 / 3.0 * np.pi * ((r + width / 2) ** 3 - (r - width / 2) ** 3)
    running = np.cumsum(rho * g * shells)  # neighbours within r
    assert running[np.searchsorted(r, 3.2)] == pytest.approx(6.0)  # faces at 3 Å
    assert running[np.searchsorted(r, 4.3)] == pytest.approx(18.0)  # + 12 edges at 4.24 Å
    # the MAE of MDsim: r_max · mean |Δg|, per pair
    other = {"Ar-Ar": np.zeros(500)}
    assert simulation.rdf_mae(curves, other) == {"Ar-Ar": pytest.approx(6.0 * g.mean())}
    assert simulation.rdf_mae(curves, curves) == {"Ar-Ar": 0.0}


def test_rdf_stability_finds_the_first_window_that_leaves_the_reference():
    a = _simple_cubic(3.0, 4)
    b = _simple_cubic(3.0, 4)
    b.positions[::2] += 0.4  # half the atoms moved: another structure
    frames = Frames.from_atoms([a] * 5 + [b] * 10)
    _, reference = simulation.radial_distribution(Frames.from_atoms([a]))
    _, moved = simulation.radial_distribution(Frames.from_atoms([b]))
    full = simulation.rdf_mae(moved, reference)["Ar-Ar"]
    # windows of 3: the window at frame 3 holds 1 moved frame (MAE full/3), at 4 two (2 full/3)
    stable = simulation.rdf_stability(frames, reference, window=3, threshold=0.5 * full)
    assert stable["collapsed"] and stable["first_collapse_frame"] == 4
    assert stable["frames_before_collapse"] == 4 and stable["window_frames"] == 3
    np.testing.assert_allclose(stable["max_rdf_mae"][:6],
                               [0, 0, 0, full / 3, 2 * full / 3, full], atol=1e-9)
    calm = simulation.rdf_stability(frames[:5], reference, window=3, threshold=0.5 * full)
    assert not calm["collapsed"] and calm["frames_before_collapse"] == 5


def test_msd_matches_a_direct_sum_over_time_origins():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=(30, 4, 3)), axis=0)
    direct = [np.mean([((x[t + m] - x[t]) ** 2).sum(axis=1).mean() for t in range(30 - m)])
              for m in range(30)]
    np.testing.assert_allclose(simulation.mean_squared_displacement(x), direct, atol=1e-9)


def test_diffusivity_of_random_walks_in_a_periodic_box():
    # Independent Gaussian steps of variance 2 D Δt per axis: MSD = 6 D t. H: D = 0.2 Å²/ps,
    # O: D = 0.05 Å²/ps (2e-5 and 5e-6 cm²/s), frames 0.1 ps apart, wrapped into a 10 Å box.
    rng = np.random.default_rng(0)
    dt, frames_n = 0.1, 400
    numbers = np.array([1] * 300 + [8] * 300)
    d = np.where(numbers == 1, 0.2, 0.05)
    steps = rng.normal(size=(frames_n, 600, 3)) * np.sqrt(2 * d * dt)[None, :, None]
    walk = np.cumsum(steps, axis=0) + rng.uniform(0, 10, (1, 600, 3))
    wrapped = np.mod(walk, 10.0)
    frames = Frames(positions=wrapped, atomic_numbers=numbers,
                    cell=np.repeat(np.eye(3)[None] * 10.0, frames_n, axis=0), pbc=True)
    np.testing.assert_allclose(simulation.unwrapped_positions(frames) - walk,
                               np.broadcast_to(wrapped[0] - walk[0], walk.shape), atol=1e-9)
    result = simulation.diffusivity(frames, dt)
    assert result["unit"] == "cm^2/s"
    assert result["fit_window_ps"] == [pytest.approx(4.0), pytest.approx(19.9)]
    assert result["per_element"]["H"] == pytest.approx(2e-5, rel=0.1)
    assert result["per_element"]["O"] == pytest.approx(5e-6, rel=0.1)
    with pytest.raises(DataError, match="too few to fit a diffusivity"):
        simulation.diffusivity(frames[:4], dt)


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
    r, curves = simulation.radial_distribution(Frames.from_atoms([atoms]), r_max=6.0, bins=120)
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


def test_distance_map_is_the_mean_pair_distance():
    frames = Frames(positions=np.array([[[0, 0, 0], [1.0, 0, 0], [0, 3.0, 0]],
                                        [[0, 0, 0], [2.0, 0, 0], [0, 4.0, 0]]], dtype=float),
                    atomic_numbers=[6, 1, 8])
    distances = simulation.distance_map(frames)
    expected = np.array([[0, 1.5, 3.5],
                         [1.5, 0, (np.sqrt(10) + np.sqrt(20)) / 2],
                         [3.5, (np.sqrt(10) + np.sqrt(20)) / 2, 0]])
    np.testing.assert_allclose(distances, expected, atol=1e-12)
    assert simulation.distance_map_mae(distances, distances + 0.3) == pytest.approx(0.3)
