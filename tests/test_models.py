"""Architectures and neighbour lists: symmetry, exact gradients, forward vs forward_graph,
TorchScript round trips, and agreement with ASE's neighbour list."""

import io

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from models_helpers import random_potential, random_rotation

from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.models.neighbors import neighbor_list

ARCHITECTURES = ["schnet", "painn"]


def energy_and_forces(model, positions, numbers, cell=None, pbc=(False,) * 3):
    pos = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    cell_t = torch.zeros(3, 3, dtype=torch.float64) if cell is None else torch.tensor(cell)
    energy = model(pos, torch.tensor(numbers), cell_t, torch.tensor(pbc))
    (gradient,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), -gradient.numpy()


@pytest.fixture(scope="module")
def aspirin():
    return named_molecule("aspirin").atoms


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_symmetries(architecture, aspirin):
    """Energy invariant, forces equivariant under rotation, translation and permutation."""
    model = random_potential(architecture)
    rng = np.random.default_rng(1)
    e0, f0 = energy_and_forces(model, aspirin.positions, aspirin.numbers)
    rotation = random_rotation(rng)
    moved = aspirin.positions @ rotation.T + rng.normal(size=3) * 5.0
    e1, f1 = energy_and_forces(model, moved, aspirin.numbers)
    assert e1 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f1, f0 @ rotation.T, atol=1e-10)
    order = rng.permutation(len(aspirin))
    e2, f2 = energy_and_forces(model, aspirin.positions[order], aspirin.numbers[order])
    assert e2 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f2, f0[order], atol=1e-10)
    assert np.abs(f0).max() > 1e-3  # the test would be empty for a constant model


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_periodic_translation_and_wrapping(architecture):
    """Moving an atom by a lattice vector, or shifting everything, changes nothing."""
    model = random_potential(architecture, species=(1, 8), cutoff=4.0)
    atoms = water_box(6).atoms
    cell = atoms.cell.array
    e0, f0 = energy_and_forces(model, atoms.positions, atoms.numbers, cell, (True,) * 3)
    moved = atoms.positions.copy()
    moved[4] += cell[0] - 2 * cell[2]
    moved += np.array([0.3, -1.7, 2.2])
    e1, f1 = energy_and_forces(model, moved, atoms.numbers, cell, (True,) * 3)
    assert e1 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f1, f0, atol=1e-10)


def _ghosts_by_replication(atoms, radius):
    """Test-built ghost images: every replica (in a generous supercell) within `radius` of any
    atom of the central cell; edges by brute-force distances."""
    cell = atoms.cell.array
    span = int(np.ceil(radius / min(np.linalg.norm(cell, axis=1)))) + 1
    positions, owners = [atoms.positions], [np.arange(len(atoms))]
    for a in range(-span, span + 1):
        for b in range(-span, span + 1):
            for c in range(-span, span + 1):
                if a == b == c == 0:
                    continue
                images = atoms.positions + np.array([a, b, c]) @ cell
                distance = np.linalg.norm(images[:, None] - atoms.positions[None], axis=-1)
                near = distance.min(axis=1) <= radius
                positions.append(images[near])
                owners.append(np.arange(len(atoms))[near])
    positions, owners = np.concatenate(positions), np.concatenate(owners)
    return positions, owners


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_graph_matches_forward_on_periodic_system(architecture):
    cutoff = 3.5
    model = torch.jit.script(random_potential(architecture, species=(1, 8), cutoff=cutoff,
                                              num_interactions=2))
    atoms = water_box(8).atoms
    e_ref, f_ref = energy_and_forces(model, atoms.positions, atoms.numbers, atoms.cell.array,
                                     (True,) * 3)

    positions, owners = _ghosts_by_replication(atoms, cutoff * 2 + 0.5)
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    i, j = np.nonzero((distance < cutoff + 1.0) & (distance > 0))  # with a skin, as LAMMPS
    pos = torch.tensor(positions, requires_grad=True)
    atomic = model.forward_graph(pos, torch.tensor(atoms.numbers[owners]),
                                 torch.tensor(np.stack([i, j])), torch.tensor(len(atoms)))
    (gradient,) = torch.autograd.grad(atomic.sum(), pos)
    forces = np.zeros_like(atoms.positions)
    np.add.at(forces, owners, -gradient.numpy())  # ghost forces go back to their owners
    assert float(atomic.sum().detach()) == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(forces, f_ref, atol=1e-10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_torchscript_round_trip_is_bit_exact(architecture, aspirin):
    model = torch.jit.script(random_potential(architecture, dtype=torch.float32))
    buffer = io.BytesIO()
    torch.jit.save(model, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    args = (torch.tensor(aspirin.positions, dtype=torch.float32), torch.tensor(aspirin.numbers),
            torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool))
    assert torch.equal(model(*args), loaded(*args))


def test_unknown_element_is_named():
    model = torch.jit.script(random_potential("schnet"))
    with pytest.raises((RuntimeError, torch.jit.Error), match="atomic number 7 is not known"):
        model(torch.zeros(2, 3), torch.tensor([1, 7]), torch.zeros(3, 3),
              torch.zeros(3, dtype=torch.bool))


def _canonical(i, j, shifts):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.rint(shifts).astype(int).tolist()),
                      strict=True))


@pytest.mark.parametrize("case", range(8))
def test_neighbor_list_matches_ase(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(2, 40))
    cutoff = 4.5
    if case < 2:
        cell, pbc = np.zeros((3, 3)), [False] * 3
    else:
        # triclinic, some cells narrower than the cutoff (several images per direction)
        cell = np.diag(rng.uniform(2.5, 9.0, 3)) + rng.uniform(-2, 2, (3, 3)) * (1 - np.eye(3))
        pbc = [True] * 3 if case < 6 else [True, True, False]
    positions = rng.uniform(-3, 12, (n, 3))
    atoms = Atoms(numbers=[1] * n, positions=positions, cell=cell, pbc=pbc)
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    edges, offsets = neighbor_list(torch.tensor(positions), torch.tensor(cell),
                                   torch.tensor(pbc), cutoff)
    assert _canonical(edges[0].numpy(), edges[1].numpy(), offsets.numpy()) == \
        _canonical(i, j, shifts)
