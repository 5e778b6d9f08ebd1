"""Progress reporting: core functions take an `advance` callback; the CLI draws the bars."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

#: Called with the number of units of work just completed.
Advance = Callable[[int], None]


#: Opens a progress bar: (description, total) -> context manager yielding `advance`.
ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Advance]]


def no_progress(_: int = 1) -> None:
    """An `Advance` that does nothing (the default for library calls)."""


@contextlib.contextmanager
def silent_progress(_description: str, _total: int) -> Iterator[Advance]:
    """A `ProgressFactory` that draws nothing (the default for library calls)."""
    yield no_progress


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Advance]:
    """A rich progress bar on stderr for `total` units; yields its `advance(n)` callback.

    On a non-terminal stderr (CI logs, pipes) the bar is drawn once, when it finishes.
    """
    if not enabled:
        yield no_progress
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def attach_step_progress(dynamics, advance: Advance) -> None:
    """Report each MD step of an ASE dynamics object to `advance`.

    ASE calls observers at the start of every `run()` as well as after steps, so the steps are
    counted from `dynamics.nsteps` rather than from the calls.
    """
    reported = [dynamics.nsteps]

    def report() -> None:
        advance(dynamics.nsteps - reported[0])
        reported[0] = dynamics.nsteps

    dynamics.attach(report, interval=1)
