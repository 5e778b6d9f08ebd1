"""Seeded train/validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff_core.errors import DataError


@dataclass(frozen=True)
class Split:
    """Frame indices of each subset, sorted ascending, pairwise disjoint."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _count(size: int | float | None, n_frames: int, name: str) -> int | None:
    """A subset size as a frame count: ints are counts, floats below 1 are fractions."""
    if size is None:
        return None
    if size < 0:
        raise DataError(f"{name} size must be non-negative, got {size}")
    if isinstance(size, float) and size < 1.0:
        return int(round(size * n_frames))
    if float(size) != int(size):
        raise DataError(f"{name} size must be a whole count or a fraction below 1, got {size}")
    return int(size)


def split_indices(
    n_frames: int,
    train: int | float,
    val: int | float = 0,
    test: int | float | None = None,
    seed: int = 0,
) -> Split:
    """Random, disjoint train/val/test indices for `n_frames` frames.

    Sizes are counts (int) or fractions (float in (0, 1)); `test=None` takes every frame left.
    The same `seed` always gives the same split.

    Raises:
        DataError: when the requested sizes exceed the number of frames.
    """
    n_train = _count(train, n_frames, "train")
    n_val = _count(val, n_frames, "val")
    n_test = _count(test, n_frames, "test")
    if n_test is None:
        n_test = n_frames - n_train - n_val
    if n_train + n_val + n_test > n_frames or n_test < 0:
        raise DataError(
            f"split of {n_train} train + {n_val} val + {n_test} test frames needs more than "
            f"the {n_frames} frames available"
        )
    order = np.random.default_rng(seed).permutation(n_frames)
    bounds = np.cumsum([n_train, n_val, n_test])
    return Split(
        train=np.sort(order[: bounds[0]]),
        val=np.sort(order[bounds[0] : bounds[1]]),
        test=np.sort(order[bounds[1] : bounds[2]]),
    )
