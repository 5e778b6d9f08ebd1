"""PaiNN (Schütt et al., 2021): equivariant message passing with scalar and vector features.

Scalars s_i [N, F] are invariant; vectors v_i [N, 3, F] rotate with the molecule. One interaction:

    message:  Δs_i = Σ_j φ_s(s_j) ⊙ W_s(r_ij)
              Δv_i = Σ_j v_j ⊙ φ_vv(s_j) ⊙ W_vv(r_ij) + φ_vs(s_j) ⊙ W_vs(r_ij) r̂_ij
    update:   a = MLP([s, ‖V v‖]);  v ← v + a_vv ⊙ U v;  s ← s + a_sv ⊙ ⟨U v, V v⟩ + a_ss

Input: species indices [N], edges (i ← j) [2, E], edge vectors r_ij [E, 3] in Å.
Output: one scalar per atom [N] (the `Potential` scales and shifts it to eV).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mlff_core.models.layers import cutoff_function, mlp, radial_basis, scatter_sum


class PaiNNMessage(nn.Module):
    """Message step.

    Memory matters here (every [E, F] tensor autograd keeps costs E·F floats; water at 5 Å has
    ~50 edges per atom): the filter is linear without bias in radial features that already
    carry the cutoff envelope (so W(r) still vanishes smoothly at the cutoff), the three
    gates are separate [E, F] products rather than slices of one [E, 3F] tensor, and the
    vector-feature term is skipped while all vector features are still zero (first layer).
    """

    def __init__(self, hidden: int, num_rbf: int, first: bool):
        super().__init__()
        self.hidden = hidden
        self.first = first
        self.phi = mlp([hidden, hidden, 3 * hidden], "silu")
        self.filter = nn.Linear(num_rbf, 3 * hidden, bias=False)

    def forward(self, s: Tensor, v: Tensor, radial: Tensor, directions: Tensor,
                edge_index: Tensor) -> tuple[Tensor, Tensor]:
        return self.aggregate(s, v, self.phi(s), v, radial, directions, edge_index[0],
                              edge_index[1])

    def aggregate(self, s: Tensor, v: Tensor, phi: Tensor, v_source: Tensor, radial: Tensor,
                  directions: Tensor, receiver: Tensor, sender: Tensor) -> tuple[Tensor, Tensor]:
        """(s, v) of the first n nodes (the receivers) updated from every node's phi(s) [M, 3F]
        and vector features v_source [M, 3, F]."""
        phi_v, phi_s, phi_dir = torch.split(phi, self.hidden, dim=-1)
        w_v, w_s, w_dir = torch.split(self.filter(radial), self.hidden, dim=-1)
        n_atoms = s.shape[0]
        ds = scatter_sum(phi_s[sender] * w_s, receiver, n_atoms)  # [N, F]
        gate_dir = phi_dir[sender] * w_dir  # [E, F]
        dv = scatter_sum(gate_dir.unsqueeze(1) * directions.unsqueeze(-1), receiver, n_atoms)
        if not self.first:
            gate_v = phi_v[sender] * w_v
            dv = dv + scatter_sum(v_source[sender] * gate_v.unsqueeze(1), receiver, n_atoms)
        return s + ds, v + dv


class PaiNNUpdate(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.U = nn.Linear(hidden, hidden, bias=False)
        self.V = nn.Linear(hidden, hidden, bias=False)
        self.gates = mlp([2 * hidden, hidden, 3 * hidden], "silu")

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        uv = self.U(v)
        vv = self.V(v)
        # The small constant keeps the norm's gradient finite where V v = 0 (at initialisation).
        norm = torch.sqrt(vv.pow(2).sum(dim=1) + 1e-8)
        a_vv, a_sv, a_ss = torch.split(self.gates(torch.cat([s, norm], dim=-1)), self.hidden,
                                       dim=-1)
        v = v + a_vv.unsqueeze(1) * uv
        s = s + a_sv * (uv * vv).sum(dim=1) + a_ss
        return s, v


class PaiNNInteraction(nn.Module):
    """One message step followed by one update step."""

    def __init__(self, hidden: int, num_rbf: int, first: bool):
        super().__init__()
        self.message = PaiNNMessage(hidden, num_rbf, first)
        self.update = PaiNNUpdate(hidden)

    def forward(self, s: Tensor, v: Tensor, radial: Tensor, directions: Tensor,
                edge_index: Tensor) -> tuple[Tensor, Tensor]:
        s, v = self.message(s, v, radial, directions, edge_index)
        return self.update(s, v)


class PaiNN(nn.Module):
    """PaiNN representation + atom-wise readout.

    Halo exchange (the model file's `halo_*` methods, `mlff_core.models.halo`): the state of a
    node is [s, v] flattened to [4F]; what a neighbour needs for interaction k is [phi_k(s), v]
    [6F], or phi_0(s) [3F] for the first, whose vector features are still zero.

    Args:
        num_species: size of the element embedding.
        hidden: feature width F.
        num_interactions: message-passing steps.
        cutoff: Å.
        num_rbf: radial basis functions.
        radial: 'bessel' (PaiNN's) or 'gaussian'.
        cutoff_fn: 'cosine' or 'polynomial'.
    """

    def __init__(self, num_species: int, hidden: int = 128, num_interactions: int = 3,
                 cutoff: float = 5.0, num_rbf: int = 20, radial: str = "bessel",
                 cutoff_fn: str = "cosine"):
        super().__init__()
        self.hidden = hidden
        self.embedding = nn.Embedding(num_species, hidden)
        self.rbf = radial_basis(radial, num_rbf, cutoff)
        self.envelope = cutoff_function(cutoff_fn, cutoff)
        self.interactions = nn.ModuleList(
            [PaiNNInteraction(hidden, num_rbf, first=k == 0) for k in range(num_interactions)]
        )
        self.readout = mlp([hidden, hidden // 2, 1], "silu")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                layer_edges: Optional[list[Tensor]] = None) -> Tensor:  # noqa: UP045
        distances = torch.linalg.norm(edge_vectors, dim=-1)
        directions = edge_vectors / distances.unsqueeze(-1)
        radial = self.rbf(distances) * self.envelope(distances).unsqueeze(-1)  # [E, R]
        s = self.embedding(species)
        v = torch.zeros(s.shape[0], 3, self.hidden, dtype=s.dtype, device=s.device)
        for layer, interaction in enumerate(self.interactions):
            if layer_edges is None:
                s, v = interaction(s, v, radial, directions, edge_index)
            else:
                keep = layer_edges[layer]
                s, v = interaction(s, v, radial[keep], directions[keep], edge_index[:, keep])
        return self.readout(s).squeeze(-1)

    # --- halo exchange: one layer at a time, messages only to the first n (local) nodes ---

    def halo_source_widths(self) -> list[int]:
        return [3 * self.hidden if k == 0 else 6 * self.hidden
                for k in range(len(self.interactions))]

    def halo_edge_features(self, species: Tensor, edge_index: Tensor,
                           edge_vectors: Tensor) -> list[Tensor]:
        """[radial features × envelope [E, R], unit vectors [E, 3]] of the edges."""
        distances = torch.linalg.norm(edge_vectors, dim=-1)
        directions = edge_vectors / distances.unsqueeze(-1)
        return [self.rbf(distances) * self.envelope(distances).unsqueeze(-1), directions]

    def halo_embed(self, species: Tensor, features: list[Tensor]) -> Tensor:
        s = self.embedding(species)
        return torch.cat([s, torch.zeros(s.shape[0], 3 * self.hidden, dtype=s.dtype,
                                         device=s.device)], dim=1)

    def _split_state(self, state: Tensor) -> tuple[Tensor, Tensor]:
        f = self.hidden
        return state[:, :f], state[:, f:].reshape(-1, 3, f)

    def halo_source(self, layer: int, state: Tensor) -> Tensor:
        s, _ = self._split_state(state)
        source = state
        for k, interaction in enumerate(self.interactions):
            if k == layer:
                phi = interaction.message.phi(s)
                source = phi if k == 0 else torch.cat([phi, state[:, self.hidden:]], dim=1)
        return source

    def halo_interaction(self, layer: int, state: Tensor, source: Tensor, receiver: Tensor,
                         sender: Tensor, features: list[Tensor]) -> Tensor:
        s, v = self._split_state(state)
        f = self.hidden
        out = state
        for k, interaction in enumerate(self.interactions):
            if k == layer:
                phi = source[:, :3 * f]
                v_source = v if k == 0 else source[:, 3 * f:].reshape(-1, 3, f)
                s_new, v_new = interaction.message.aggregate(s, v, phi, v_source, features[0],
                                                             features[1], receiver, sender)
                s_new, v_new = interaction.update(s_new, v_new)
                out = torch.cat([s_new, v_new.reshape(-1, 3 * f)], dim=1)
        return out

    def halo_readout(self, state: Tensor, features: list[Tensor]) -> Tensor:
        return self.readout(state[:, :self.hidden]).squeeze(-1)
