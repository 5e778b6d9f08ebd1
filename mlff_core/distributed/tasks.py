"""Independent calls of one function as Dask tasks (`TaskMap`).

`cluster_map(client)` submits each call as a task to a Dask cluster, reports each as it
finishes and returns the results in the order of the calls.
A task whose worker dies is rerun by Dask (`retries`); an exception a call raises on a worker is
raised again here, as if the call had run here. The function and its arguments travel to the workers
pickled by Dask, between this suite's own processes; whatever files they read or write must lie
on a filesystem the workers share with the client.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mlff_core.progress import Advance, no_progress

#: (function, calls, weights, advance) -> [function(*call) for call in calls]; `advance` gets
#: each call's weight (default 1) when it finishes.
TaskMap = Callable[..., list[Any]]


def cluster_map(client, retries: int = 2) -> TaskMap:
    """A `TaskMap` whose calls run as tasks on `client`'s workers."""
    def run(function: Callable[..., Any], calls: Sequence[tuple],
            weights: Sequence[int] | None = None, advance: Advance = no_progress) -> list[Any]:
        from distributed import as_completed

        futures = [client.submit(function, *call, retries=retries, pure=False) for call in calls]
        weight = {future.key: 1 if weights is None else weights[k]
                  for k, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                future.result()  # a call that raised: raised here
                advance(weight[future.key])
            return [future.result() for future in futures]
        finally:
            client.cancel(futures)

    return run
