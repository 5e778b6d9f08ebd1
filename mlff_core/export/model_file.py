"""The model file: one TorchScript archive that every engine loads unchanged.

Layout (contract in ../shared/DESIGN.md):
- a scripted `ModelFile` module with methods
    forward(positions [N,3] Å, atomic_numbers [N], cell [3,3] Å, pbc [3]) -> energy [] eV
    forward_graph(positions [M,3], atomic_numbers [M], edge_index [2,E], n_local []) -> [n_local] eV
    explore(positions [N,3], atomic_numbers [N]) -> [5] (nearest cluster, distance / radius,
        bond score, atoms i and j of the bond that sets it; files before the bond score: [2])
    explore_periodic(positions, atomic_numbers, cell, pbc) -> the same, for periodic models
    committee_forces(positions [N,3], atomic_numbers [N], cell [3,3], pbc [3]) -> [M,N,3] eV/Å
        each committee member's forces (M = 1 for a single model: its forces)
- an extra file `mlff.json` with the metadata (species, cutoff, num_interactions, units, dtype,
  architecture, hyperparameters, training provenance, exploration model, committee_size, halo).

Format version 2 (this writer) adds, for models that can run one interaction layer at a time
(SchNet, PaiNN, committees of them), the halo methods an engine that splits space between
processes calls instead of forward_graph, so that its ghost atoms need reach only one cutoff:
    halo_graph(atomic_numbers [M], edge_index [2,E], edge_vectors [E,3] Å, finite [n])
        -> graph (list of tensors): the per-step constants; nodes are the n local atoms first,
        then ghosts; every edge (i ← j) has a local receiver i < n and r_ij = x_j − x_i
    halo_embed(graph) -> state [M,S]; halo_source(layer, state [m,S], graph) -> [m,W_layer]
        (row-wise: what a neighbour needs from a node for that layer)
    halo_interaction(layer, state [n,S], source [M,W_layer], graph) -> state [n,S]
    halo_readout(state [n,S], graph) -> [n] eV per-atom energies
and mlff.json "halo": {"source_widths": [W_0, …, W_{T−1}]} (null: the model runs whole, with
ghosts to cutoff × num_interactions: MACE, NequIP, imported TorchScript energy models). The
engine fills the ghost rows of each layer's source from their owners (layers ≥ 1) and sums the
gradients of ghost rows onto the owners in the backward pass (`mlff_core.models.halo`). Files of
format version 1 (no halo methods) stay loadable everywhere and run whole.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mlff_core.export.exploration import ExplorationModel
from mlff_core.fileio import atomic_output
from mlff_core.models import scriptable
from mlff_core.models.potential import Potential
from mlff_core.runtime import package_versions

#: 2 adds the halo_* methods (when mlff.json's "halo" is not null); version-1 files stay loadable.
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
METADATA_NAME = "mlff.json"
REQUIRED_METADATA = ("format_version", "species", "cutoff", "num_interactions", "energy_unit",
                     "length_unit", "dtype", "architecture", "hyperparameters")


class ModelFile(nn.Module):
    """What is scripted into the model file: the potential plus the exploration classifier."""

    def __init__(self, potential: Potential, exploration: ExplorationModel | None = None):
        super().__init__()
        self.potential = potential
        self.exploration = exploration if exploration is not None else ExplorationModel()

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        return self.potential(positions, atomic_numbers, cell, pbc)

    @torch.jit.export
    def forward_graph(self, positions: Tensor, atomic_numbers: Tensor, edge_index: Tensor,
                      n_local: Tensor) -> Tensor:
        return self.potential.forward_graph(positions, atomic_numbers, edge_index, n_local)

    @torch.jit.export
    def committee_forces(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                         pbc: Tensor) -> Tensor:
        """Forces of each committee member, [M, N, 3] eV/Å, in the positions' dtype (a single
        model is a committee of one). Each member's own graph, so memory stays one call's."""
        forces: list[Tensor] = []
        if hasattr(self.potential, "members"):
            for member in self.potential.members:
                inputs = positions.detach().requires_grad_(True)
                forces.append(_forces(member(inputs, atomic_numbers, cell, pbc), inputs))
        else:
            inputs = positions.detach().requires_grad_(True)
            forces.append(_forces(self.potential(inputs, atomic_numbers, cell, pbc), inputs))
        return torch.stack(forces).to(positions.dtype)

    @torch.jit.export
    def explore(self, positions: Tensor, atomic_numbers: Tensor) -> Tensor:
        no_cell = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
        no_pbc = torch.zeros(3, dtype=torch.bool, device=positions.device)
        return self.exploration(positions, atomic_numbers, no_cell, no_pbc)

    @torch.jit.export
    def explore_periodic(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                         pbc: Tensor) -> Tensor:
        return self.exploration(positions, atomic_numbers, cell, pbc)


class HaloModelFile(ModelFile):
    """A model file whose potential also runs one interaction layer at a time, exchanging
    node features between engine domains before each layer (LAMMPS' halo mode; the contract
    and a reference driver are in `mlff_core.models.halo`)."""

    @torch.jit.export
    def halo_graph(self, atomic_numbers: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                   finite: Tensor) -> list[Tensor]:
        return self.potential.halo_graph(atomic_numbers, edge_index, edge_vectors, finite)

    @torch.jit.export
    def halo_embed(self, graph: list[Tensor]) -> Tensor:
        return self.potential.halo_embed(graph)

    @torch.jit.export
    def halo_source(self, layer: int, state: Tensor, graph: list[Tensor]) -> Tensor:
        return self.potential.halo_source(layer, state, graph)

    @torch.jit.export
    def halo_interaction(self, layer: int, state: Tensor, source: Tensor,
                         graph: list[Tensor]) -> Tensor:
        return self.potential.halo_interaction(layer, state, source, graph)

    @torch.jit.export
    def halo_readout(self, state: Tensor, graph: list[Tensor]) -> Tensor:
        return self.potential.halo_readout(state, graph)


def halo_source_widths(potential: nn.Module) -> list[int] | None:
    """Per-layer widths of the features a halo exchange sends, or None when `potential`
    cannot run layer by layer (MACE, NequIP, imported TorchScript energy models)."""
    widths = getattr(potential, "halo_source_widths", None)
    return None if widths is None else widths()


def _forces(energy: Tensor, positions: Tensor) -> Tensor:
    """−∂E/∂x [N, 3] of an energy [] computed from `positions` [N, 3]."""
    grads = torch.autograd.grad([energy], [positions])
    gradient = grads[0]
    assert gradient is not None
    return -gradient


def model_metadata(potential: Potential, architecture: str, hyperparameters: dict[str, Any],
                   training: dict[str, Any] | None = None,
                   exploration: dict[str, Any] | None = None,
                   periodic: bool | None = None) -> dict[str, Any]:
    """The `mlff.json` document for a potential (dtype read from the potential itself).

    `periodic` records whether the training data were periodic cells (engines refuse a
    periodic model on a non-periodic system and the reverse); None when unknown.
    """
    from ase.data import chemical_symbols

    species = [int(z) for z in potential.species.tolist()]
    committee_size = int(getattr(potential, "committee_size", 1))
    widths = halo_source_widths(potential)
    return {
        "format_version": FORMAT_VERSION,
        "species": species,
        "species_symbols": [chemical_symbols[z] for z in species],
        "cutoff": potential.cutoff,
        "num_interactions": potential.num_interactions,
        "receptive_field": potential.cutoff * potential.num_interactions,
        "energy_unit": "eV",
        "length_unit": "Angstrom",
        "dtype": str(potential.energy_scale.dtype).removeprefix("torch."),
        "architecture": architecture,
        "hyperparameters": hyperparameters,
        "training": training or {},
        "exploration": exploration,
        "periodic": periodic,
        "committee_size": committee_size,
        "halo": None if widths is None else {"source_widths": widths},
        "cuda_graphs": False,  # the neighbour list has a data-dependent size
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_versions": package_versions(),
    }


def save_model_file(potential: Potential, path: str | os.PathLike, metadata: dict[str, Any],
                    exploration: ExplorationModel | None = None) -> Path:
    """Script `potential` (+ exploration) and write the model file atomically; returns its path."""
    was_training = potential.training
    potential.eval()
    layout = HaloModelFile if halo_source_widths(potential) is not None else ModelFile
    scripted = torch.jit.script(layout(scriptable(potential), exploration))
    potential.train(was_training)
    path = Path(path)
    with atomic_output(path) as fh:
        torch.jit.save(scripted, fh, _extra_files={METADATA_NAME: json.dumps(metadata, indent=1)})
    return path
