"""Frames as torch-geometric graphs: one `Data` per frame, batched with `Batch`.

Each `Data` holds `pos` [N, 3] Å, `z` [N] long, and when present `energy` [1] eV,
`forces` [N, 3] eV/Å, `cell` [1, 3, 3] Å, `pbc` [1, 3], plus `frame` [1] (the frame index) and
`weight` [1] (per-sample weight, 1 by default). Edges are built by the models themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from mlff_core.data.frames import Frames


def frame_to_data(
    frames: Frames,
    index: int,
    dtype: torch.dtype = torch.float64,
    weight: float = 1.0,
) -> Data:
    """Frame `index` of `frames` as a torch-geometric `Data` graph (no edges)."""
    data = Data(
        pos=torch.as_tensor(frames.positions[index], dtype=dtype),
        z=torch.as_tensor(frames.atomic_numbers, dtype=torch.long),
        frame=torch.tensor([index], dtype=torch.long),
        weight=torch.tensor([weight], dtype=dtype),
    )
    if frames.energies is not None:
        data.energy = torch.tensor([frames.energies[index]], dtype=dtype)
    if frames.forces is not None:
        data.forces = torch.as_tensor(frames.forces[index], dtype=dtype)
    if frames.cell is not None:
        data.cell = torch.as_tensor(frames.cell[index], dtype=dtype).unsqueeze(0)
    data.pbc = torch.as_tensor(frames.pbc).unsqueeze(0)
    return data


def to_batch(
    frames: Frames,
    indices: Sequence[int] | np.ndarray | None = None,
    dtype: torch.dtype = torch.float64,
    weights: np.ndarray | None = None,
) -> Batch:
    """Frames `indices` (all when None) as one torch-geometric `Batch`.

    Args:
        weights: [F] per-frame sample weights (indexed by frame), default 1.
    """
    if indices is None:
        indices = range(frames.n_frames)
    return Batch.from_data_list(
        [
            frame_to_data(frames, int(i), dtype, 1.0 if weights is None else float(weights[i]))
            for i in indices
        ]
    )


def iter_batches(
    frames: Frames,
    batch_size: int,
    indices: Sequence[int] | np.ndarray | None = None,
    shuffle: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    weights: np.ndarray | None = None,
) -> Iterator[Batch]:
    """Batches of up to `batch_size` frames; with `shuffle`, a seeded permutation."""
    order = np.arange(frames.n_frames) if indices is None else np.asarray(indices)
    if shuffle:
        order = np.random.default_rng(seed).permutation(order)
    for start in range(0, len(order), batch_size):
        yield to_batch(frames, order[start : start + batch_size], dtype, weights)
