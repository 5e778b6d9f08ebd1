"""Local + ghost graphs of periodic systems, the layout LAMMPS hands to `forward_graph`.

A model with T interaction layers and cutoff r_c gives atom i an energy that depends on atoms up
to T·r_c away. Surrounding the N local atoms with every periodic image within T·r_c ("ghosts")
and listing edges among all of them therefore reproduces each local atom's energy exactly,
although ghosts near the outer shell have wrong features themselves.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from mlff_core.models.neighbors import pairs_within


def ghost_graph(atoms: Atoms, cutoff: float, depth: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local atoms followed by their periodic images within `cutoff × depth`.

    Returns:
        positions [M, 3] Å (local atoms first, then ghosts),
        atomic_numbers [M],
        edge_index [2, E] (i ← j) among all M atoms within `cutoff`,
        owner [M]: index of the local atom each entry is (an image of).
    """
    n_local = len(atoms)
    if atoms.pbc.any():
        _, j, shifts = neighbor_list("ijS", atoms, cutoff * depth, self_interaction=False)
        images = {(int(a), tuple(s)) for a, s in zip(j, shifts.tolist(), strict=True)
                  if any(s)}
        images = sorted(images)
        ghost_atoms = np.array([a for a, _ in images], dtype=np.int64)
        ghost_shifts = np.array([s for _, s in images], dtype=float).reshape(-1, 3)
        ghost_positions = atoms.positions[ghost_atoms] + ghost_shifts @ atoms.cell.array
    else:
        ghost_atoms = np.zeros(0, dtype=np.int64)
        ghost_positions = np.zeros((0, 3))
    owner = np.concatenate([np.arange(n_local), ghost_atoms])
    positions = np.concatenate([atoms.positions, ghost_positions])

    import torch

    everything = torch.as_tensor(positions)
    i, j = pairs_within(everything, everything, cutoff)
    keep = i != j
    edge_index = torch.stack([i[keep], j[keep]]).numpy()
    return positions, atoms.numbers[owner], edge_index, owner
