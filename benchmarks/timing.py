"""Shared timing helper of the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def seconds(function: Callable[..., object], *args, **kwargs) -> float:
    """Wall time of one call `function(*args, **kwargs)`, s."""
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def median_seconds(call: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of `call` over `repeats` runs after `warmup` untimed ones (TorchScript
    optimises a function during its first calls)."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)
