"""The model file's exploration classifier: conformation clusters of each training system in
TorchScript, so every engine can tell explored from unexplored frames with the file alone.

explore(...) returns [nearest cluster, distance to its centroid / its radius, bond score,
atom i, atom j] (float64 [5]): a ratio above 1 means outside the conformation clusters; a bond
score above 1 means bond i-j is outside its training range (`mlff_core.metrics.bond_ranges`,
the local score; 0 and atoms −1 where the system has no bond ranges: periodic systems, files
fitted before them). Readers of the first two elements keep working. A system with no entry
(atoms differ from every training system) gives [-1, NaN, NaN, -1, -1]: "no reference
clusters", never a guess.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mlff_core.metrics.descriptors import (
    inverse_distances,
    pair_rdf,
    symmetric_blocks,
    symmetrize,
)


class SystemClusters(nn.Module):
    """Fitted clusters of one system (state from `ConformationClusters.to_dict()`)."""

    def __init__(self, state: dict[str, Any]):
        super().__init__()
        as64 = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        self.register_buffer("atomic_numbers", torch.tensor(state["atomic_numbers"]))
        self.register_buffer("mean", as64(state["mean"]))
        self.register_buffer("components", as64(state["components"]))
        self.register_buffer("centroids", as64(state["centroids"]))
        self.register_buffer("radii", as64(state["radii"]).clamp_min(1e-12))
        self.periodic = state["descriptor"] == "pair_rdf"
        self.species: list[int] = [int(z) for z in state["species"]]
        self.r_max = float(state["rdf"]["r_max"])
        self.bins = int(state["rdf"]["bins"])
        groups = [list(g) for g in state.get("equivalent_groups", [])]
        self.symmetrized = bool(groups)
        index, keep = symmetric_blocks(len(state["atomic_numbers"]), groups) if groups else \
            (torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        self.register_buffer("block_index", index)
        self.register_buffer("block_keep", keep)
        bonds = state.get("bond_ranges") or {"bonds": [], "mean": [], "std": [], "level": 1.0}
        self.register_buffer("bond_pairs",
                             torch.tensor(bonds["bonds"], dtype=torch.long).reshape(-1, 2))
        self.register_buffer("bond_mean", as64(bonds["mean"]).reshape(-1))
        self.register_buffer("bond_std", as64(bonds["std"]).reshape(-1))
        self.bond_level = float(bonds["level"])

    def matches(self, atomic_numbers: Tensor, periodic: bool) -> bool:
        return periodic == self.periodic and atomic_numbers.shape == self.atomic_numbers.shape \
            and bool(torch.equal(atomic_numbers.to(self.atomic_numbers.dtype),
                                 self.atomic_numbers))

    def forward(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Tensor:
        positions = positions.to(torch.float64)
        if self.periodic:
            descriptor = pair_rdf(positions, self.atomic_numbers, cell.to(torch.float64), pbc,
                                  self.species, self.r_max, self.bins)
        else:
            descriptor = inverse_distances(positions.unsqueeze(0))
            if self.symmetrized:
                descriptor = symmetrize(descriptor, self.block_index, self.block_keep)
            descriptor = descriptor[0]
        projected = (descriptor - self.mean) @ self.components.T
        distances = torch.linalg.norm(self.centroids - projected, dim=1)
        nearest = int(torch.argmin(distances))
        ratio = distances[nearest] / self.radii[nearest]
        local = torch.zeros((), dtype=torch.float64)
        atom_i, atom_j = -1, -1
        if self.bond_pairs.shape[0] > 0 and not self.periodic:
            lengths = torch.linalg.norm(positions[self.bond_pairs[:, 1]]
                                        - positions[self.bond_pairs[:, 0]], dim=1)
            z = (lengths - self.bond_mean).abs() / self.bond_std
            worst = int(torch.argmax(z))
            local = z[worst] / self.bond_level
            atom_i, atom_j = int(self.bond_pairs[worst, 0]), int(self.bond_pairs[worst, 1])
        head = torch.tensor([float(nearest)], dtype=torch.float64)
        atoms = torch.tensor([float(atom_i), float(atom_j)], dtype=torch.float64)
        return torch.cat([head, torch.stack([ratio, local]), atoms])


class ExplorationModel(nn.Module):
    """Clusters of every training system; picks the one whose atoms match the frame."""

    def __init__(self, systems: list[dict[str, Any]] | None = None):
        super().__init__()
        self.systems = nn.ModuleList([SystemClusters(s) for s in (systems or [])])

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        periodic = bool(pbc.any())
        for system in self.systems:
            if system.matches(atomic_numbers, periodic):
                return system(positions, cell, pbc)
        return torch.tensor([-1.0, float("nan"), float("nan"), -1.0, -1.0], dtype=torch.float64)
