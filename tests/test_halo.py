"""Halo exchange (issue 13): the model file's layer-by-layer methods, driven with ghosts one
cutoff deep and the exchange of `mlff_core.models.halo`, give the energy, forces and virial of
the model's own `forward` (autograd of positions, and a strain derivative for the virial)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from models_helpers import save_random_committee, save_random_model, with_edited_metadata

from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.errors import ModelFileError
from mlff_core.export.loading import load_model
from mlff_core.models.halo import HALO_METHODS, halo_energy_forces_virial


def _reference(module, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray]:
    """E, F = −∂E/∂x and W = −∂E/∂ε (homogeneous strain of positions and cell) from forward."""
    x = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
    cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deform = torch.eye(3, dtype=torch.float64) + strain
    energy = module(x @ deform, torch.as_tensor(atoms.numbers), cell @ deform,
                    torch.as_tensor(atoms.pbc))
    grad_x, grad_strain = torch.autograd.grad(energy, [x, strain])
    return float(energy.detach()), -grad_x.numpy(), -grad_strain.numpy()


@pytest.mark.parametrize("architecture", ["schnet", "painn", "committee", "mace"])
def test_halo_methods_equal_the_models_forward(tmp_path, architecture):
    path = tmp_path / "model.pt"
    if architecture == "mace":  # MACE built here from mace-torch's blocks (3 layers)
        save_random_model(path, "mace", species=(1, 8), cutoff=4.0, num_interactions=3,
                          hidden=8, max_ell=2, correlation=2, avg_num_neighbors=12.0,
                          periodic=True)
    elif architecture == "committee":
        save_random_committee(path, "painn", size=2, cutoff=4.0, num_interactions=3, hidden=16,
                              periodic=True)
    else:
        save_random_model(path, architecture, cutoff=4.0, num_interactions=3, hidden=16,
                          periodic=True)
    model = load_model(path)
    module = model.module
    for method in HALO_METHODS:
        assert hasattr(module, method), method
    widths = model.metadata["halo"]["source_widths"]
    assert model.metadata["format_version"] == 2 and len(widths) == 3
    # a 9.3 Å box of 27 waters: 3 layers × 4 Å reach past the box, images of images count
    atoms = water_box(27).atoms
    energy, forces, virial = halo_energy_forces_virial(module, atoms, model.cutoff, 3)
    expected = _reference(module, atoms)
    assert energy == pytest.approx(expected[0], abs=1e-10)
    np.testing.assert_allclose(forces, expected[1], atol=1e-10)
    np.testing.assert_allclose(virial, expected[2], atol=1e-9)
    assert np.abs(expected[1]).max() > 1e-2  # the comparison has something to compare


def test_source_widths_are_what_the_methods_send(tmp_path):
    save_random_model(tmp_path / "m.pt", "painn", cutoff=4.0, num_interactions=3, hidden=8)
    model = load_model(tmp_path / "m.pt")
    atoms = named_molecule("ethanol").atoms
    n = len(atoms)
    i, j = np.nonzero(np.ones((n, n)) - np.eye(n))
    edges = torch.as_tensor(np.stack([i, j]))
    x = torch.as_tensor(atoms.positions)
    graph = model.module.halo_graph(torch.as_tensor(atoms.numbers), edges, x[j] - x[i],
                                    torch.ones(n, dtype=torch.bool))
    state = model.module.halo_embed(graph)
    sent = [model.module.halo_source(k, state, graph).shape[1] for k in range(3)]
    assert sent == model.metadata["halo"]["source_widths"] == [24, 48, 48]


def test_halo_metadata_that_contradicts_the_file_is_one_clear_error(tmp_path):
    model = save_random_model(tmp_path / "m.pt", "schnet", cutoff=4.0, num_interactions=3)
    short = with_edited_metadata(model, tmp_path / "short.pt", halo={"source_widths": [128]})
    with pytest.raises(ModelFileError, match="one positive integer per interaction layer"):
        load_model(short)
    # a file without halo methods (format 1 layout) whose mlff.json claims them
    old = with_edited_metadata(model, tmp_path / "old.pt", format_version=1, halo=None)
    assert load_model(old).metadata["format_version"] == 1  # still loads
    from mlff_core.export.model_file import ModelFile

    plain = torch.jit.script(ModelFile(load_model(model).to_potential()))
    claimed = tmp_path / "claimed.pt"
    torch.jit.save(plain, str(claimed),
                   _extra_files={"mlff.json": json.dumps(load_model(model).metadata)})
    with pytest.raises(ModelFileError, match="lacks the scripted method"):
        load_model(claimed)
