"""The model file: metadata, validation errors of load_model, warm-start round trip."""

import json
import zipfile

import pytest
import torch
from models_helpers import random_potential, save_random_model
from torch import Tensor, nn

from mlff_core.errors import ModelFileError
from mlff_core.export import load_model
from mlff_core.export.model_file import METADATA_NAME, ModelFile


def test_metadata_and_methods(tmp_path):
    loaded = load_model(save_random_model(tmp_path / "m.pt", cutoff=4.5, num_interactions=2))
    meta = loaded.metadata
    assert meta["species"] == [1, 6, 8] and meta["species_symbols"] == ["H", "C", "O"]
    assert meta["cutoff"] == 4.5 and meta["num_interactions"] == 2
    assert meta["receptive_field"] == 9.0
    assert (meta["energy_unit"], meta["length_unit"], meta["dtype"]) == ("eV", "Angstrom",
                                                                         "float64")
    assert meta["architecture"] == "painn" and meta["exploration"] is None
    # Without fitted clusters, explore() reports "no reference clusters": (-1, NaN).
    result = loaded.module.explore(torch.zeros(3, 3, dtype=torch.float64), torch.tensor([1, 1, 8]))
    assert result[0] == -1 and torch.isnan(result[1])


def test_warm_start_potential_reproduces_the_file(tmp_path):
    loaded = load_model(save_random_model(tmp_path / "m.pt", architecture="schnet"))
    potential = loaded.to_potential()
    args = (torch.rand(5, 3, dtype=torch.float64) * 3, torch.tensor([1, 1, 6, 8, 8]),
            torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool))
    assert potential.energy_scale.dtype == torch.float64
    assert float(potential(*args).detach()) == float(loaded.module(*args).detach())


def _rewrite_metadata(source, target, change):
    extra = {METADATA_NAME: ""}
    module = torch.jit.load(str(source), _extra_files=extra)
    metadata = json.loads(extra[METADATA_NAME])
    change(metadata)
    torch.jit.save(module, str(target), _extra_files={METADATA_NAME: json.dumps(metadata)})


class _NoExplore(nn.Module):
    def __init__(self, potential):
        super().__init__()
        self.potential = potential

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        return self.potential(positions, atomic_numbers, cell, pbc)

    @torch.jit.export
    def forward_graph(self, positions: Tensor, atomic_numbers: Tensor, edge_index: Tensor,
                      n_local: Tensor) -> Tensor:
        return self.potential.forward_graph(positions, atomic_numbers, edge_index, n_local)


class _WrongExplore(ModelFile):
    @torch.jit.export
    def explore(self, positions: Tensor, atomic_numbers: int) -> Tensor:  # wrong type
        return positions.sum()


def test_load_model_errors(tmp_path):
    good = save_random_model(tmp_path / "good.pt")
    metadata = json.loads(zipfile.ZipFile(good).read(
        next(n for n in zipfile.ZipFile(good).namelist() if n.endswith(METADATA_NAME))))

    cases = {}
    (tmp_path / "text.pt").write_text("not a model")
    cases["text.pt"] = "not a TorchScript model file"
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as archive:
        archive.writestr("hello.txt", "a zip, but not TorchScript")
    cases["zip.pt"] = "not a TorchScript model file"
    torch.jit.save(torch.jit.load(str(good)), str(tmp_path / "bare.pt"))
    cases["bare.pt"] = "missing mlff.json metadata"
    _rewrite_metadata(good, tmp_path / "v99.pt", lambda m: m.update(format_version=99))
    cases["v99.pt"] = "unsupported format_version 99"
    _rewrite_metadata(good, tmp_path / "nocut.pt", lambda m: m.pop("cutoff"))
    cases["nocut.pt"] = "mlff.json lacks cutoff"
    potential = random_potential("schnet")
    torch.jit.save(torch.jit.script(_NoExplore(potential)), str(tmp_path / "noexplore.pt"),
                   _extra_files={METADATA_NAME: json.dumps(metadata)})
    cases["noexplore.pt"] = "no scripted method explore()"
    torch.jit.save(torch.jit.script(_WrongExplore(potential)), str(tmp_path / "wrong.pt"),
                   _extra_files={METADATA_NAME: json.dumps(metadata)})
    cases["wrong.pt"] = "method explore() has signature (Tensor, int) -> Tensor"
    cases["missing.pt"] = "model file not found"

    for name, message in cases.items():
        with pytest.raises(ModelFileError) as info:
            load_model(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)), str(info.value)
        assert message in str(info.value), (name, str(info.value))
