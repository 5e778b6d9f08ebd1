"""Seeded splits and torch-geometric batches."""

import numpy as np
import pytest
import torch

from mlff_core.data.pyg import iter_batches, to_batch
from mlff_core.data.splits import split_indices
from mlff_core.errors import DataError


def test_split_is_seeded_disjoint_and_complete():
    a = split_indices(100, train=60, val=0.1, seed=3)
    b = split_indices(100, train=60, val=0.1, seed=3)
    c = split_indices(100, train=60, val=0.1, seed=4)
    assert a.sizes() == {"train": 60, "val": 10, "test": 30}
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train, c.train)
    union = np.concatenate([a.train, a.val, a.test])
    assert sorted(union.tolist()) == list(range(100))


def test_split_too_large():
    with pytest.raises(DataError, match="needs more than the 10 frames"):
        split_indices(10, train=8, val=5)


def test_batch_layout(water_frames, periodic_frames):
    batch = to_batch(water_frames, [2, 0])
    assert batch.num_graphs == 2
    assert batch.pos.shape == (6, 3) and batch.pos.dtype == torch.float64
    np.testing.assert_array_equal(batch.batch.numpy(), [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(batch.energy.numpy(), water_frames.energies[[2, 0]])
    np.testing.assert_allclose(batch.forces[3:].numpy(), water_frames.forces[0])
    np.testing.assert_array_equal(batch.frame.numpy(), [2, 0])
    periodic = to_batch(periodic_frames, dtype=torch.float32)
    assert periodic.cell.shape == (2, 3, 3) and periodic.cell.dtype == torch.float32
    assert periodic.pbc.shape == (2, 3)


def test_iter_batches_covers_every_frame(water_frames):
    seen = [int(f) for b in iter_batches(water_frames, 2, shuffle=True, seed=1) for f in b.frame]
    assert sorted(seen) == [0, 1, 2]
