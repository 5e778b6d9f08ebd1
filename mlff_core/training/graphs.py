"""Training graphs: frames as torch-geometric `Data` with their neighbour lists precomputed.

Positions in a dataset never move, so each frame's edges (i ← j) and periodic shift vectors are
found once. During training the edge vectors are rebuilt from positions that require grad:

    r_ij = pos[j] - pos[i] + shift_ij          (shift_ij = offsets_ij @ cell, Å)

Each `Data` holds pos [N,3] Å, z [N], edge_index [2,E], shift [E,3] Å, energy [1] eV,
forces [N,3] eV/Å, weight [1], frame [1] (index in its Frames), system [1] (index of its Frames),
and, when clusters are given, cluster [1] (the frame's conformation cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from mlff_core.data.frames import Frames
from mlff_core.models.neighbors import neighbor_list


@lru_cache(maxsize=1)
def scripted_neighbor_list():
    """The TorchScript neighbour list (compiled once per process)."""
    return torch.jit.script(neighbor_list)


def frame_graphs(frames: Frames, cutoff: float, dtype: torch.dtype = torch.float32,
                 indices: Sequence[int] | np.ndarray | None = None,
                 weights: np.ndarray | None = None, system: int = 0,
                 clusters: np.ndarray | None = None) -> list[Data]:
    """One graph per selected frame (all when `indices` is None).

    Args:
        weights: [F] per-frame sample weights indexed by frame (default 1).
        system: index recorded in every graph (to tell systems apart in multi-system training).
        clusters: [F] conformation cluster of each frame, indexed by frame.
    """
    search = scripted_neighbor_list()
    indices = range(frames.n_frames) if indices is None else indices
    z = torch.as_tensor(frames.atomic_numbers, dtype=torch.long)
    pbc = torch.as_tensor(frames.pbc)
    graphs = []
    for f in indices:
        f = int(f)
        pos = torch.as_tensor(frames.positions[f], dtype=torch.float64)
        cell = (torch.zeros(3, 3, dtype=torch.float64) if frames.cell is None
                else torch.as_tensor(frames.cell[f], dtype=torch.float64))
        edge_index, offsets = search(pos, cell, pbc, cutoff)
        graph = Data(
            pos=pos.to(dtype),
            z=z,
            edge_index=edge_index,
            shift=(offsets @ cell).to(dtype),
            frame=torch.tensor([f]),
            system=torch.tensor([system]),
            weight=torch.tensor([1.0 if weights is None else float(weights[f])], dtype=dtype),
        )
        if clusters is not None:
            graph.cluster = torch.tensor([int(clusters[f])])
        if frames.energies is not None:
            graph.energy = torch.tensor([frames.energies[f]], dtype=dtype)
        if frames.forces is not None:
            graph.forces = torch.as_tensor(frames.forces[f], dtype=dtype)
        graphs.append(graph)
    return graphs


def batch_indices(n_graphs: int, batch_size: int, shuffle: bool, seed: int,
                  probabilities: np.ndarray | None = None) -> list[np.ndarray]:
    """Graph indices of each batch of an epoch: in order, shuffled with a seeded permutation
    when asked, or, given `probabilities` [G] (summing to 1), as many graphs drawn with
    replacement with those probabilities (an epoch of weighted sampling)."""
    rng = np.random.default_rng(seed)
    if probabilities is not None:
        order = rng.choice(n_graphs, n_graphs, replace=True, p=probabilities)
    elif shuffle:
        order = rng.permutation(n_graphs)
    else:
        order = np.arange(n_graphs)
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def batches(graphs: Sequence[Data], batch_size: int, shuffle: bool, seed: int,
            probabilities: np.ndarray | None = None) -> list[Batch]:
    """Graphs grouped into `Batch`es (the batches of `batch_indices`)."""
    return [Batch.from_data_list([graphs[k] for k in indices])
            for indices in batch_indices(len(graphs), batch_size, shuffle, seed, probabilities)]
