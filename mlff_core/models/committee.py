"""`Committee`: M independently trained potentials of one architecture as one potential.

    E = (1/M) Σ_k E_k        F_i = (1/M) Σ_k F_i^k   (the engines' energy and forces)

The members differ only in their initialisation seed (`mlff train --committee M`); they share
species, cutoff, depth and precision, so the committee keeps the model-file contract of a single
`Potential` (forward, forward_graph) and every engine runs it unchanged. What a committee adds
is its spread: `member_energies` gives each member's energy, from which the model file's
`committee_forces` takes each member's forces, and the force deviation

    ε = max_i sqrt( (1/M) Σ_k |F_i^k − F̄_i|² )      (eV/Å; DeePMD-kit's model deviation)

is the committee's uncertainty signal (`mlff_core.monitors.force_deviation`). One engine step
costs M member calls.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Committee(nn.Module):
    """The mean of `members` (two or more potentials with the same species, cutoff, depth and
    dtype).

    Raises:
        ValueError: fewer than two members, or members that disagree on those facts.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        first = members[0]
        for k, member in enumerate(members[1:], start=1):
            same = (torch.equal(member.species, first.species)
                    and member.cutoff == first.cutoff
                    and member.num_interactions == first.num_interactions
                    and member.energy_scale.dtype == first.energy_scale.dtype)
            if not same:
                raise ValueError(f"committee member {k} differs from member 0 in species, "
                                 "cutoff, layers or dtype; members must share them")
        self.members = nn.ModuleList(members)
        self.committee_size = len(members)
        self.cutoff = float(first.cutoff)
        self.num_interactions = int(first.num_interactions)
        self.register_buffer("species", first.species.clone())
        # A copy of member 0's force scale: its dtype is the committee's, read where the
        # metadata and its checks read a potential's dtype (each member keeps its own scale).
        self.register_buffer("energy_scale", first.energy_scale.clone())

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        """Mean energy [] eV (see `Potential.forward`)."""
        return self.member_energies(positions, atomic_numbers, cell, pbc).mean()

    @torch.jit.export
    def member_energies(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                        pbc: Tensor) -> Tensor:
        """Each member's energy, [M] eV."""
        return torch.stack([member(positions, atomic_numbers, cell, pbc)
                            for member in self.members])

    @torch.jit.export
    def forward_graph(self, positions: Tensor, atomic_numbers: Tensor, edge_index: Tensor,
                      n_local: Tensor) -> Tensor:
        """Mean per-atom energies of the first n_local atoms, [n_local] eV (see
        `Potential.forward_graph`)."""
        energies = [member.forward_graph(positions, atomic_numbers, edge_index, n_local)
                    for member in self.members]
        return torch.stack(energies).mean(dim=0)

    # --- halo exchange: members side by side (states and sources concatenated column-wise,
    # one exchange per layer for all members; members share one architecture, so equal widths)

    def halo_source_widths(self) -> list[int] | None:
        widths = [member.halo_source_widths() for member in self.members]
        if any(w is None for w in widths):
            return None
        return [len(widths) * w for w in widths[0]]

    def halo_graph(self, atomic_numbers: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                   finite: Tensor) -> list[Tensor]:
        """The members' graphs one after the other (each of the same length)."""
        graph: list[Tensor] = []
        for member in self.members:
            graph += member.halo_graph(atomic_numbers, edge_index, edge_vectors, finite)
        return graph

    def _member_graph(self, graph: list[Tensor], k: int) -> list[Tensor]:
        """Member k's part of `halo_graph`'s list."""
        size = len(graph) // self.committee_size
        return graph[k * size:(k + 1) * size]

    def halo_embed(self, graph: list[Tensor]) -> Tensor:
        states: list[Tensor] = []
        for k, member in enumerate(self.members):
            states.append(member.halo_embed(self._member_graph(graph, k)))
        return torch.cat(states, dim=1)

    def halo_source(self, layer: int, state: Tensor, graph: list[Tensor]) -> Tensor:
        states = torch.chunk(state, self.committee_size, dim=1)
        sources: list[Tensor] = []
        for k, member in enumerate(self.members):
            sources.append(member.halo_source(layer, states[k], self._member_graph(graph, k)))
        return torch.cat(sources, dim=1)

    def halo_interaction(self, layer: int, state: Tensor, source: Tensor,
                         graph: list[Tensor]) -> Tensor:
        states = torch.chunk(state, self.committee_size, dim=1)
        sources = torch.chunk(source, self.committee_size, dim=1)
        updated: list[Tensor] = []
        for k, member in enumerate(self.members):
            updated.append(member.halo_interaction(layer, states[k], sources[k],
                                                   self._member_graph(graph, k)))
        return torch.cat(updated, dim=1)

    def halo_readout(self, state: Tensor, graph: list[Tensor]) -> Tensor:
        """Mean per-atom energies of the members, [n] eV."""
        states = torch.chunk(state, self.committee_size, dim=1)
        energies: list[Tensor] = []
        for k, member in enumerate(self.members):
            energies.append(member.halo_readout(states[k], self._member_graph(graph, k)))
        return torch.stack(energies).mean(dim=0)
