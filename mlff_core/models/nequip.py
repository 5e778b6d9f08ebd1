"""NequIP (Batzner et al., Nat. Commun. 2022) from a `nequip-compile`d TorchScript file, as a
representation inside this suite's `Potential` (forward, forward_graph with ghost atoms, every
engine), the way `MaceModelRepresentation` wraps a scripted MACE.

A compiled NequIP model (`GraphModel`) takes and returns a dict of tensors; its `model` child
(`ForceOutput`/`ForceStressOutput`) differentiates the energy inside the call and frees the
graph, so the representation calls the energy network it wraps (its `func`) instead, which
returns per-atom energies (`atomic_energy`, [N, 1]) and leaves the derivatives to the caller.

Edge conventions agree: NequIP's `edge_index` row 0 is the centre i (messages are summed onto
it), row 1 the neighbour j, and its edge vector is x_j − x_i (+ cell shift); ours is (i ← j) with
r_ij = x_j − x_i. The network is handed our vectors as `edge_vectors` (it then never reads
positions, cell or shifts). Atom types are positions in the model's `type_names`, which need not
follow atomic numbers.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class NequipRepresentation(nn.Module):
    """A compiled NequIP energy network as a representation: (species index [N], edges
    (i ← j) [2, E], r_ij [E, 3] Å, optional per-layer edge subsets) → per-atom energies [N] in
    the model's unit (eV), per-type scales and shifts included. `layer_edges` is ignored: every
    layer runs on the whole graph, which is exact with ghosts to cutoff × layers.

    Args:
        network: the energy network of a compiled model (`GraphModel.model.func`).
        atom_types: [S] NequIP type index of each of the Potential's species indices.
    """

    def __init__(self, network: torch.jit.ScriptModule, atom_types: list[int]):
        super().__init__()
        self.network = network
        self.register_buffer("atom_types", torch.tensor(atom_types, dtype=torch.long))

    def forward(self, species_index: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                layer_edges: Optional[list[Tensor]] = None) -> Tensor:  # noqa: UP045
        data: dict[str, Tensor] = {
            "atom_types": self.atom_types[species_index],
            "edge_index": edge_index,
            "edge_vectors": edge_vectors,
        }
        return self.network(data)["atomic_energy"].reshape(-1).to(edge_vectors.dtype)


__all__ = ["NequipRepresentation"]
