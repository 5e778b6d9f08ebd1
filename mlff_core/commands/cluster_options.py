"""Options of the commands that work on a Dask cluster (`mlff data relabel`, `mlff asteroid`,
...): where the workers come from, and how frames are cut into labelling tasks. See
mlff_core/distributed."""

from __future__ import annotations

from collections.abc import Callable

import click

from mlff_core.distributed.cluster import BATCH_SYSTEMS
from mlff_core.distributed.labelling import CHUNK_SIZES


def worker_options(command: Callable) -> Callable:
    """--scheduler, --cluster, --cluster-config and --workers: where the Dask workers come
    from."""
    for option in reversed(_worker_options()):
        command = option(command)
    return command


def cluster_options(command: Callable) -> Callable:
    """The `worker_options` and --chunk-size (frames per labelling task)."""
    command = click.option(
        "--chunk-size", type=click.IntRange(min=1),
        help="Frames per task (default by level: "
             + ", ".join(f"{family} {size}" for family, size in CHUNK_SIZES.items())
             + "). Each finished chunk is saved beside the output, so a killed run resumes "
               "where it stopped.")(command)
    return worker_options(command)


def _worker_options() -> list[Callable]:
    return [
        click.option("--scheduler", metavar="ADDRESS",
                     help="A running Dask scheduler (tcp://host:8786) whose workers do the "
                          "work."),
        click.option("--cluster", type=click.Choice(list(BATCH_SYSTEMS)),
                     help="Start the Dask workers as batch jobs (dask-jobqueue); needs "
                          "--cluster-config."),
        click.option("--cluster-config", type=click.Path(dir_okay=False),
                     help="YAML file for --cluster: queue, cores, memory, walltime, jobs "
                          "(example in the README, 'Scaling out')."),
        click.option("--workers", type=click.IntRange(min=1),
                     help="Without --scheduler or --cluster: worker processes of a local "
                          "cluster, one thread each (default: this machine's cores)."),
    ]
