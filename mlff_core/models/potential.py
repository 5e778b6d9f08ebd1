"""`Potential`: a representation (SchNet, PaiNN) turned into an interatomic potential in eV.

    E = Σ_i  [ scale · y_i + E_ref(Z_i) ]

y_i is the representation's per-atom output, `scale` the force scale of the training data (RMS of
force components, eV/Å·Å = eV) and E_ref(Z) per-element reference energies fitted to the training
energies by least squares. Forces are always -∂E/∂x by autograd.

Methods (TorchScript, the model-file contract):
    forward(positions [N,3] Å, atomic_numbers [N], cell [3,3] Å, pbc [3]) -> energy [] eV
        builds its own neighbour list (cell list; periodic cells of any shape).
    forward_graph(positions [M,3], atomic_numbers [M], edge_index [2,E], n_local []) -> [n_local]
        per-atom energies of the first n_local atoms from engine-supplied neighbours
        (local + ghost atoms, positions already imaged); edges beyond the cutoff are ignored,
        and each layer skips the ghosts that can no longer reach a local atom.

Both return NaN (and NaN forces) instead of a finite number where the input is outside any
model's domain: the energy of an atom with a non-finite position (or in a non-finite cell), or
closer than `OVERLAP_DISTANCE` to another atom (atoms on top of each other), is NaN, and so is
every total and force it enters. Engines then see a non-finite energy or force, which every
engine's collapse monitor treats as a collapse; in a batch of disjoint frames only the frame
concerned is NaN.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mlff_core.models.layers import scatter_sum
from mlff_core.models.neighbors import neighbor_list

#: Size of the atomic-number lookup table (Z = 0 .. 118).
_TABLE_SIZE = 119

#: Å: two atoms closer than this overlap; no chemistry lives there (H2's bond is 0.74 Å).
OVERLAP_DISTANCE = 0.1


def domain_factors(finite_atoms: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                   overlap: float = OVERLAP_DISTANCE) -> Tensor:
    """Per-atom factor [N]: 1 for an atom inside the model's domain, NaN for an atom whose
    position is not finite (`finite_atoms` False) or that is closer than `overlap` Å to a
    neighbour. Multiplying the atomic energies by it makes those energies, and the forces they
    reach, NaN, and leaves atoms elsewhere alone (other frames of a batch), with no host sync."""
    bad = ~finite_atoms
    if edge_vectors.shape[0] > 0:
        close = torch.linalg.norm(edge_vectors, dim=-1) < overlap
        bad = bad.index_fill(0, edge_index[0][close], True)
        bad = bad.index_fill(0, edge_index[1][close], True)
    one = torch.ones(bad.shape[0], dtype=edge_vectors.dtype, device=edge_vectors.device)
    return torch.where(bad, torch.full_like(one, float("nan")), one)


def finite_rows(positions: Tensor) -> tuple[Tensor, Tensor]:
    """(positions [N, 3] with non-finite entries set to 0, [N] whether each row was finite)."""
    finite = torch.isfinite(positions)
    return torch.where(finite, positions, torch.zeros_like(positions)), finite.all(dim=1)


def species_indices(table: Tensor, species: Tensor, atomic_numbers: Tensor) -> Tensor:
    """Species index of each atom from a Z → index `table` (−1: unknown) over the model's
    `species` (atomic numbers); a clear error naming an element the model does not know."""
    size = table.shape[0]
    known = (atomic_numbers >= 0) & (atomic_numbers < size)
    index = table[atomic_numbers.clamp(0, size - 1)]
    unknown = (index < 0) | ~known
    if bool(unknown.any()):
        z = int(atomic_numbers[unknown][0])
        known_numbers: list[int] = species.tolist()
        raise RuntimeError(
            "element with atomic number " + str(z) + " is not known by this model "
            "(it knows atomic numbers " + str(known_numbers) + ")"
        )
    return index


class Potential(nn.Module):
    """Per-element scaled and shifted energy model around a message-passing representation.

    Args:
        representation: module mapping (species index [N], edge_index [2,E], r_ij [E,3]) to [N].
        species: atomic numbers the model knows; species index k is species[k].
        cutoff: neighbour cutoff, Å.
        num_interactions: message-passing depth (the receptive field is cutoff × this).
    """

    def __init__(self, representation: nn.Module, species: list[int], cutoff: float,
                 num_interactions: int):
        super().__init__()
        self.representation = representation
        self.cutoff = float(cutoff)
        self.num_interactions = int(num_interactions)
        table = torch.full((_TABLE_SIZE,), -1, dtype=torch.long)
        table[torch.tensor(species, dtype=torch.long)] = torch.arange(len(species))
        self.register_buffer("species_table", table)
        self.register_buffer("species", torch.tensor(species, dtype=torch.long))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.register_buffer("atomic_reference", torch.zeros(len(species)))

    def species_indices(self, atomic_numbers: Tensor) -> Tensor:
        """Species index of each atom; a clear error for an element the model does not know."""
        return species_indices(self.species_table, self.species, atomic_numbers)

    def atomic_energies(self, atomic_numbers: Tensor, edge_index: Tensor,
                        edge_vectors: Tensor,
                        layer_edges: Optional[list[Tensor]] = None) -> Tensor:  # noqa: UP045
        """Energy of each atom, [N] eV, from edges (i ← j) and their vectors r_ij [E, 3] Å.

        `layer_edges` (one index tensor per interaction) restricts each layer to a subset of
        the edges (see `forward_graph`).
        """
        index = self.species_indices(atomic_numbers)
        raw = self.representation(index, edge_index, edge_vectors, layer_edges)
        return raw * self.energy_scale + self.atomic_reference[index]

    def layer_edge_subsets(self, edge_index: Tensor, n_nodes: int, n_local: int) -> list[Tensor]:
        """For each interaction, the edges whose receiver can still influence a local atom.

        With T interactions, a local atom's energy depends on nodes up to T hops away, and
        layer t (1-based) only needs to update nodes within T − t hops of a local atom. Hops
        are counted along the given edges from the local atoms (the first `n_local` nodes).
        Ghost atoms far from this rank's atoms are thus skipped layer by layer.
        """
        receiver, sender = edge_index[0], edge_index[1]
        depth = self.num_interactions
        hops = torch.full((n_nodes,), depth + 1, dtype=torch.long, device=edge_index.device)
        hops[:n_local] = 0
        for _ in range(depth - 1):
            reached = hops[receiver] + 1
            hops = hops.scatter_reduce(0, sender, reached, reduce="amin", include_self=True)
        receiver_hops = hops[receiver]
        return [torch.nonzero(receiver_hops <= depth - 1 - layer).reshape(-1)
                for layer in range(depth)]

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        # Geometry in the input's precision, the network in the model's: float32 coordinates
        # of 1e5 Å keep only 0.01 Å, their differences in float64 keep everything.
        positions, finite = finite_rows(positions)
        cell = cell.to(positions.dtype)
        finite = finite & torch.isfinite(cell).all()
        cell = torch.where(torch.isfinite(cell), cell, torch.zeros_like(cell))
        edge_index, offsets = neighbor_list(positions, cell, pbc, self.cutoff)
        vectors = positions[edge_index[1]] - positions[edge_index[0]]
        if bool(pbc.any()):
            vectors = vectors + offsets @ cell
        vectors = vectors.to(self.energy_scale.dtype)
        energies = self.atomic_energies(atomic_numbers, edge_index, vectors)
        return (energies * domain_factors(finite, edge_index, vectors)).sum()

    @torch.jit.export
    def forward_graph(self, positions: Tensor, atomic_numbers: Tensor, edge_index: Tensor,
                      n_local: Tensor) -> Tensor:
        positions, finite = finite_rows(positions)  # differences in the input's precision
        vectors = (positions[edge_index[1]] - positions[edge_index[0]]).to(
            self.energy_scale.dtype)
        inside = torch.linalg.norm(vectors, dim=-1) < self.cutoff
        edges, vectors = edge_index[:, inside], vectors[inside]
        local = int(n_local)
        subsets = self.layer_edge_subsets(edges, positions.shape[0], local)
        energies = self.atomic_energies(atomic_numbers, edges, vectors, subsets)
        return (energies * domain_factors(finite, edges, vectors))[:local]

    # --- halo exchange (see mlff_core.models.halo): the model file's halo_* methods ---

    def halo_source_widths(self) -> list[int] | None:
        """Width of what each interaction needs from a neighbour, or None when the
        representation cannot run one layer at a time (then engines use forward_graph)."""
        widths = getattr(self.representation, "halo_source_widths", None)
        return None if widths is None else list(widths())

    def halo_graph(self, atomic_numbers: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                   finite: Tensor) -> list[Tensor]:
        """Per-step constants: [species [M], receiver [E], sender [E], domain factor [n],
        edge features...] for n = len(finite) local nodes (receivers are local)."""
        n_local = finite.shape[0]
        vectors = edge_vectors.to(self.energy_scale.dtype)
        species = self.species_indices(atomic_numbers)
        finite_nodes = torch.ones(atomic_numbers.shape[0], dtype=torch.bool,
                                  device=atomic_numbers.device)
        finite_nodes[:n_local] = finite
        factor = domain_factors(finite_nodes, edge_index, vectors)[:n_local]
        graph = [species, edge_index[0], edge_index[1], factor]
        return graph + self.representation.halo_edge_features(species, edge_index, vectors)

    def halo_embed(self, graph: list[Tensor]) -> Tensor:
        return self.representation.halo_embed(graph[0], graph[4:])

    def halo_source(self, layer: int, state: Tensor, graph: list[Tensor]) -> Tensor:
        return self.representation.halo_source(layer, state)

    def halo_interaction(self, layer: int, state: Tensor, source: Tensor,
                         graph: list[Tensor]) -> Tensor:
        return self.representation.halo_interaction(layer, state, source, graph[1], graph[2],
                                                    graph[4:])

    def halo_readout(self, state: Tensor, graph: list[Tensor]) -> Tensor:
        raw = self.representation.halo_readout(state, graph[4:])
        species = graph[0][:state.shape[0]]
        return (raw * self.energy_scale + self.atomic_reference[species]) * graph[3]

    def batch_energies(self, atomic_numbers: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                       batch: Tensor, num_graphs: int) -> Tensor:
        """Total energy of each graph in a batch, [num_graphs] eV (used for training)."""
        energies = self.atomic_energies(atomic_numbers, edge_index, edge_vectors)
        return scatter_sum(energies, batch, num_graphs)
