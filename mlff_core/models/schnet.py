"""SchNet (Schütt et al., 2018): invariant continuous-filter convolutions.

    x_i ← x_i + v( Σ_j  W(x)_j ⊙ f(rbf(d_ij)) · fc(d_ij) )        (one interaction)

Input: species indices [N], edges (i ← j) [2, E], edge vectors r_ij [E, 3] in Å.
Output: one scalar per atom [N] (dimensionless; the `Potential` scales and shifts it to eV).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mlff_core.models.layers import (
    ShiftedSoftplus,
    cutoff_function,
    mlp,
    radial_basis,
    scatter_sum,
)


class CFConv(nn.Module):
    """One SchNet interaction: filter-generating network, convolution, atom-wise update."""

    def __init__(self, hidden: int, filters: int, num_rbf: int):
        super().__init__()
        self.filter_net = nn.Sequential(
            nn.Linear(num_rbf, filters), ShiftedSoftplus(), nn.Linear(filters, filters)
        )
        self.in_to_filter = nn.Linear(hidden, filters, bias=False)
        self.update = nn.Sequential(
            nn.Linear(filters, hidden), ShiftedSoftplus(), nn.Linear(hidden, hidden)
        )

    def forward(self, x: Tensor, rbf: Tensor, envelope: Tensor, edge_index: Tensor) -> Tensor:
        return self.convolve(x, self.in_to_filter(x), rbf, envelope, edge_index[0], edge_index[1])

    def convolve(self, x: Tensor, source: Tensor, rbf: Tensor, envelope: Tensor,
                 receiver: Tensor, sender: Tensor) -> Tensor:
        """x [n, hidden] of the receivers updated from `source` = in_to_filter(x) [M, filters]
        of every node (n ≤ M: receivers are the first n nodes)."""
        weights = self.filter_net(rbf) * envelope.unsqueeze(-1)  # [E, filters]
        messages = source[sender] * weights
        return x + self.update(scatter_sum(messages, receiver, x.shape[0]))


class SchNet(nn.Module):
    """SchNet representation + atom-wise readout.

    Halo exchange (the model file's `halo_*` methods, `mlff_core.models.halo`): the state of a
    node is x [hidden]; what a neighbour needs for interaction k is in_to_filter_k(x) [filters].

    Args:
        num_species: size of the element embedding.
        hidden: feature width.
        num_interactions: message-passing steps.
        cutoff: Å.
        num_rbf: radial basis functions.
        filters: width of the continuous filters (default: hidden).
        radial: 'gaussian' (SchNet's) or 'bessel'.
        cutoff_fn: 'cosine' or 'polynomial'.
    """

    def __init__(self, num_species: int, hidden: int = 128, num_interactions: int = 3,
                 cutoff: float = 5.0, num_rbf: int = 50, filters: int = 0,
                 radial: str = "gaussian", cutoff_fn: str = "cosine"):
        super().__init__()
        filters = filters or hidden
        self.embedding = nn.Embedding(num_species, hidden)
        self.rbf = radial_basis(radial, num_rbf, cutoff)
        self.envelope = cutoff_function(cutoff_fn, cutoff)
        self.interactions = nn.ModuleList(
            [CFConv(hidden, filters, num_rbf) for _ in range(num_interactions)]
        )
        self.readout = mlp([hidden, hidden // 2, 1], "ssp")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                layer_edges: Optional[list[Tensor]] = None) -> Tensor:  # noqa: UP045
        distances = torch.linalg.norm(edge_vectors, dim=-1)
        rbf = self.rbf(distances)
        envelope = self.envelope(distances)
        x = self.embedding(species)
        for layer, interaction in enumerate(self.interactions):
            if layer_edges is None:
                x = interaction(x, rbf, envelope, edge_index)
            else:
                keep = layer_edges[layer]
                x = interaction(x, rbf[keep], envelope[keep], edge_index[:, keep])
        return self.readout(x).squeeze(-1)

    # --- halo exchange: one layer at a time, messages only to the first n (local) nodes ---

    def halo_source_widths(self) -> list[int]:
        return [interaction.in_to_filter.out_features for interaction in self.interactions]

    def halo_edge_features(self, species: Tensor, edge_index: Tensor,
                           edge_vectors: Tensor) -> list[Tensor]:
        """[rbf [E, R], envelope [E]] of the edges."""
        distances = torch.linalg.norm(edge_vectors, dim=-1)
        return [self.rbf(distances), self.envelope(distances)]

    def halo_embed(self, species: Tensor, features: list[Tensor]) -> Tensor:
        return self.embedding(species)

    def halo_source(self, layer: int, state: Tensor) -> Tensor:
        source = state
        for k, interaction in enumerate(self.interactions):
            if k == layer:
                source = interaction.in_to_filter(state)
        return source

    def halo_interaction(self, layer: int, state: Tensor, source: Tensor, receiver: Tensor,
                         sender: Tensor, features: list[Tensor]) -> Tensor:
        out = state
        for k, interaction in enumerate(self.interactions):
            if k == layer:
                out = interaction.convolve(state, source, features[0], features[1], receiver,
                                           sender)
        return out

    def halo_readout(self, state: Tensor, features: list[Tensor]) -> Tensor:
        return self.readout(state).squeeze(-1)
