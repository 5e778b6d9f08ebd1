"""Energy models scripted elsewhere (`mlff import --from torchscript`) behind the model-file
contract.

The user's TorchScript module must offer

    forward(positions [N,3] Å, atomic_numbers [N] long, cell [3,3] Å, pbc [3] bool) -> energy

(eV, a 0-d or 1-element tensor; cell rows are lattice vectors, a zero cell with pbc all False
for a molecule), and may offer per-atom energies as a scripted method

    atomic_energies(positions, atomic_numbers, cell, pbc) -> [N] eV   (summing to forward's).

The module builds its own neighbours; what it declares at import is its species, its cutoff and
its number of message-passing layers (atoms interact only through pairs closer than the cutoff,
so an atom's energy depends on atoms up to cutoff × layers away).

- `ExternalPotential`: energies and forces (`forward`) only. Its `forward_graph` raises: without
  per-atom energies LAMMPS cannot run it (each rank sums the energies of its local atoms, and a
  periodic box is seen through ghost atoms), and the model file says so (`per_atom_energies`
  false in mlff.json) so engines refuse it up front.
- `ExternalAtomicPotential`: also `forward_graph`, from `atomic_energies` called on the local and
  ghost positions without a cell. The engine's ghost shell is cutoff × layers deep, which makes
  this exact for local atoms. The graph's edges (those within the cutoff) split the atoms into
  connected components, and each component holding a local atom is evaluated on its own: atoms
  of different components interact through no pair within the cutoff, and a batch of frames
  handed over as one disjoint graph (overlapping in space) stays a batch of separate frames.

Both check the atomic numbers against the declared species (the suite's usual error for an
unknown element) and give NaN energies and forces for non-finite positions, as `Potential` does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mlff_core.models.potential import finite_rows, species_indices

#: The name of the optional per-atom energy method of an imported TorchScript module.
ATOMIC_ENERGIES_METHOD = "atomic_energies"

#: Why a model file imported without per-atom energies cannot give them (engines add the file).
NO_PER_ATOM_ENERGIES = (
    "gives no per-atom energies: it was imported (mlff import --from torchscript) from a module "
    "without a scripted atomic_energies(positions, atomic_numbers, cell, pbc) -> [N] eV method; "
    "energies and forces work, per-atom energies (and LAMMPS, which needs those of its local "
    "atoms) do not. Add that method to the module and import it again")

#: Size of the atomic-number lookup table (Z = 0 .. 118), as in `Potential`.
_TABLE_SIZE = 119


def connected_components(edge_index: Tensor, n_nodes: int) -> Tensor:
    """[n_nodes]: a label per node, the same for nodes joined by a path of edges [2, E]
    (the label is a node of the component). Minimum-label propagation with pointer jumping."""
    labels = torch.arange(n_nodes, device=edge_index.device)
    if edge_index.shape[1] == 0:
        return labels
    a, b = edge_index[0], edge_index[1]
    changed = True
    while changed:
        low = torch.minimum(labels[a], labels[b])
        new = labels.scatter_reduce(0, a, low, reduce="amin", include_self=True)
        new = new.scatter_reduce(0, b, low, reduce="amin", include_self=True)
        new = new[new]  # a label is a node of the same component: follow it
        changed = not bool(torch.equal(new, labels))
        labels = new
    return labels


class ExternalPotential(nn.Module):
    """A scripted energy model (no per-atom energies) as the model file's potential.

    Args:
        model: the user's TorchScript module (`forward` as in the module docstring).
        species: atomic numbers the model knows (sorted).
        cutoff: Å, the largest distance at which two atoms interact directly.
        num_interactions: message-passing layers (the receptive field is cutoff × this).
        dtype: the model's floating-point type (positions and cell are handed over in it).
    """

    def __init__(self, model: nn.Module, species: list[int], cutoff: float,
                 num_interactions: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.model = model
        self.cutoff = float(cutoff)
        self.num_interactions = int(num_interactions)
        self.per_atom_energies = False
        self.no_per_atom_energies = "this model " + NO_PER_ATOM_ENERGIES  # TorchScript: no globals
        table = torch.full((_TABLE_SIZE,), -1, dtype=torch.long)
        table[torch.tensor(species, dtype=torch.long)] = torch.arange(len(species))
        self.register_buffer("species_table", table)
        self.register_buffer("species", torch.tensor(species, dtype=torch.long))
        self.register_buffer("energy_scale", torch.tensor(1.0, dtype=dtype))  # dtype marker

    def species_indices(self, atomic_numbers: Tensor) -> Tensor:
        """Species index of each atom; a clear error for an element the model does not know."""
        return species_indices(self.species_table, self.species, atomic_numbers)

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        self.species_indices(atomic_numbers)
        dtype = self.energy_scale.dtype
        positions, finite = finite_rows(positions)
        inside = finite.all() & torch.isfinite(cell).all()
        cell = torch.where(torch.isfinite(cell), cell, torch.zeros_like(cell))
        energy = self.model(positions.to(dtype), atomic_numbers, cell.to(dtype), pbc)
        if energy.numel() != 1:
            raise RuntimeError("the imported model's forward returned " + str(energy.numel())
                               + " values; it must return one energy")
        one = torch.ones_like(self.energy_scale)
        # a factor, not a choice between values: the forces of a NaN energy are NaN too
        return energy.reshape(()).to(dtype) * torch.where(inside, one, one * float("nan"))

    @torch.jit.export
    def forward_graph(self, positions: Tensor, atomic_numbers: Tensor, edge_index: Tensor,
                      n_local: Tensor) -> Tensor:
        raise RuntimeError(self.no_per_atom_energies)


class ExternalAtomicPotential(ExternalPotential):
    """A scripted energy model with `atomic_energies`: also `forward_graph` (LAMMPS, per-atom
    energies in ASE). Arguments as `ExternalPotential`."""

    def __init__(self, model: nn.Module, species: list[int], cutoff: float,
                 num_interactions: int, dtype: torch.dtype = torch.float64):
        super().__init__(model, species, cutoff, num_interactions, dtype)
        self.per_atom_energies = True

    @torch.jit.export
    def forward_graph(self, positions: Tensor, atomic_numbers: Tensor, edge_index: Tensor,
                      n_local: Tensor) -> Tensor:
        self.species_indices(atomic_numbers)
        dtype, device = self.energy_scale.dtype, positions.device
        positions, finite = finite_rows(positions)
        local, n_nodes = int(n_local), positions.shape[0]
        if local == 0:
            return torch.zeros(0, dtype=dtype, device=device)
        vectors = positions[edge_index[1]] - positions[edge_index[0]]
        edges = edge_index[:, torch.linalg.norm(vectors, dim=-1) < self.cutoff]
        labels = connected_components(edges, n_nodes)
        no_cell = torch.zeros(3, 3, dtype=dtype, device=device)
        no_pbc = torch.zeros(3, dtype=torch.bool, device=device)
        model_positions = positions.to(dtype)
        if bool((labels == labels[0]).all()):  # one component: the usual case in LAMMPS
            energies = self._atomic_energies(model_positions, atomic_numbers, no_cell, no_pbc)
        else:
            order = torch.argsort(labels)
            _, counts = torch.unique_consecutive(labels[order], return_counts=True)
            members: list[Tensor] = []
            parts: list[Tensor] = []
            sizes: list[int] = counts.tolist()
            for group in torch.split(order, sizes):
                if int(group.min()) < local:  # components without local atoms are not needed
                    members.append(group)
                    parts.append(self._atomic_energies(model_positions[group],
                                                       atomic_numbers[group], no_cell, no_pbc))
            energies = torch.zeros(n_nodes, dtype=dtype, device=device).index_copy(
                0, torch.cat(members), torch.cat(parts))
        one = torch.ones(n_nodes, dtype=dtype, device=device)
        factor = torch.where(finite, one, torch.full_like(one, float("nan")))
        return (energies * factor)[:local]

    def _atomic_energies(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                         pbc: Tensor) -> Tensor:
        energies = self.model.atomic_energies(positions, atomic_numbers, cell, pbc)
        if energies.numel() != positions.shape[0]:
            raise RuntimeError("the imported model's atomic_energies returned "
                               + str(energies.numel()) + " values for "
                               + str(positions.shape[0]) + " atoms")
        return energies.reshape(-1).to(positions.dtype)


__all__ = ["ATOMIC_ENERGIES_METHOD", "NO_PER_ATOM_ENERGIES", "ExternalAtomicPotential",
           "ExternalPotential", "connected_components"]
