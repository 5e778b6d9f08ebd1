"""Exploration MD on a Dask cluster: the runs of a continued-learning pass as Dask tasks.

A pass of `mlff active-learn` is tens of independent MD runs (every start × every seed). Each
is one task (`run_md_task`): the worker finds the engine by name (the `mlff.engines` entry
points), runs it with the model file and the start, and writes the engine's files into the
run's directory, which must lie on a filesystem the workers share with the client (as the
chunks of `labelling.py` do). The summary comes back; the trajectories are analysed in the
client's process, as in the serial path.

A task whose worker dies is rerun by Dask (`retries`) from a clean run directory, so no
trajectory mixes two attempts. An engine error on a worker (a model that fails to load, a bad
option) comes back as the same exception. The runs are seeded as in the serial path; a worker
runs one thread, so a trajectory can differ from a multi-threaded serial run's in the last bits
of its floating-point sums, which MD then amplifies over long runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlff_core.distributed.tasks import cluster_map
from mlff_core.engines import get_engine
from mlff_core.progress import Advance, no_progress


@dataclass(frozen=True)
class MDRun:
    """One MD run of an exploration pass.

    Attributes:
        name: the run's name (its directory's).
        model: model file; structure: starting structure file; output_dir: the run directory.
        options: the engine's keywords (temperature K, timestep fs, steps, report_interval,
            friction 1/ps, bond_threshold Å, action, seed, engine-specific options).
    """

    name: str
    model: str
    structure: str
    output_dir: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.options.get("steps", 0))


#: Runs the MD runs of a pass with engine `name`: (name, runs, advance) -> their summaries in the
#: order of `runs`; `advance` receives MD steps (a run that stopped early counts in full).
MDRunner = Callable[[str, Sequence[MDRun], Advance], list[dict[str, Any]]]


def serial_md_runner(engine: str, runs: Sequence[MDRun],
                     advance: Advance = no_progress) -> list[dict[str, Any]]:
    """An `MDRunner` in this process, one run after the other (step-by-step progress)."""
    run_engine = get_engine(engine)
    summaries = []
    for run in runs:
        summary = run_engine(run.model, run.structure, run.output_dir, advance=advance,
                             **run.options)
        advance(run.steps - int(summary.get("steps_run", run.steps)))
        summaries.append(summary)
    return summaries


def run_md_task(engine: str, run: MDRun) -> dict[str, Any]:
    """One run on a worker, from a clean run directory (a retried task's first attempt may have
    left files there); returns the engine's summary."""
    out = Path(run.output_dir)
    if out.exists():
        shutil.rmtree(out)
    return get_engine(engine)(run.model, run.structure, run.output_dir, **run.options)


def cluster_md_runner(client, retries: int = 2) -> MDRunner:
    """An `MDRunner` that runs every MD run of a pass as a task on `client`'s workers (progress
    by finished run)."""
    tasks = cluster_map(client, retries)

    def run_all(engine: str, runs: Sequence[MDRun],
                advance: Advance = no_progress) -> list[dict[str, Any]]:
        return tasks(run_md_task, [(engine, run) for run in runs], [run.steps for run in runs],
                     advance)

    return run_all
