"""The Dask client behind `--scheduler`, `--cluster` and `--workers`.

Three ways to get workers, one context manager (`dask_client`):
- `--scheduler tcp://host:8786`: a Dask scheduler that is already running (its workers started
  by the user, e.g. `dask worker tcp://host:8786` on each node);
- `--cluster slurm|pbs|lsf --cluster-config FILE`: dask-jobqueue submits batch jobs that start
  the workers (the file sets queue, cores, memory, walltime and how many jobs);
- neither: a local cluster of worker processes on this machine, one thread each (`--workers N`,
  default: the machine's cores).

Workers run one thread each and Dask starts them with OMP_NUM_THREADS=1 (its
`distributed.nanny.pre-spawn-environ`), so a worker labels one frame on one core.

The cluster-config file is YAML (the format of Dask's own configuration):

    # mlff cluster config for --cluster slurm
    queue: normal            # partition / queue
    account: chem123         # optional
    cores: 32                # cores per batch job
    processes: 32            # Dask workers per job (default: cores; one thread each)
    memory: 120GB            # memory per job
    walltime: "04:00:00"
    jobs: 4                  # batch jobs to start (default 1)
    job_extra_directives: ["--constraint=cpu"]
    job_script_prologue: ["source ~/.cache/mlff-plugins/venv/bin/activate"]
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlff_core.errors import ClusterError, DataError

#: dask-jobqueue's cluster class for each --cluster value.
BATCH_SYSTEMS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}

#: The keys a cluster-config file may hold, with their types; `cores` and `memory` are required.
CONFIG_KEYS: dict[str, type | tuple[type, ...]] = {
    "queue": str, "account": str, "cores": int, "processes": int, "memory": str,
    "walltime": str, "jobs": int, "job_extra_directives": list, "job_script_prologue": list,
    "local_directory": str, "interface": str, "python": str,
}
REQUIRED_KEYS = ("cores", "memory")

#: Seconds to wait for a --scheduler to answer before giving up with a ClusterError.
CONNECT_TIMEOUT = 10.0


def read_cluster_config(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a cluster-config file (see the module docstring), checked.

    Raises:
        DataError: naming the file and the problem (not YAML, not a mapping, an unknown key, a
            value of the wrong type, a required key missing, a count below 1).
    """
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataError(f"cannot read the cluster config ({exc.strerror})", path) from None
    except yaml.YAMLError as exc:
        raise DataError(f"the cluster config is not valid YAML ({exc})", path) from None
    if not isinstance(config, dict):
        raise DataError("the cluster config must be a mapping of settings (queue: ..., "
                        "cores: ..., memory: ...)", path)
    for key, value in config.items():
        if key not in CONFIG_KEYS:
            raise DataError(f"unknown setting {key!r} in the cluster config; known: "
                            f"{', '.join(CONFIG_KEYS)}", path)
        wanted = CONFIG_KEYS[key]
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise DataError(f"{key} must be {_type_name(wanted)}, not {value!r}", path)
        if wanted is int and value < 1:
            raise DataError(f"{key} must be at least 1, not {value}", path)
        if wanted is list and not all(isinstance(item, str) for item in value):
            raise DataError(f"{key} must be a list of strings", path)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise DataError(f"the cluster config lacks {', '.join(missing)} (per batch job)", path)
    return config


def _type_name(wanted: type | tuple[type, ...]) -> str:
    return {int: "a whole number", str: "a string", list: "a list"}.get(wanted, str(wanted))


def batch_cluster(system: str, config: dict[str, Any]):
    """A dask-jobqueue cluster for `system` (slurm, pbs, lsf) with `config`'s settings (without
    `jobs`); no job is submitted until it is scaled."""
    import dask_jobqueue

    if system not in BATCH_SYSTEMS:
        raise ClusterError(f"unknown batch system {system!r}; use one of "
                           f"{', '.join(BATCH_SYSTEMS)}")
    cluster_class = getattr(dask_jobqueue, BATCH_SYSTEMS[system])
    submit = cluster_class.job_cls.submit_command
    if shutil.which(submit) is None:  # dask-jobqueue would only log it, and wait for ever
        raise ClusterError(f"--cluster {system} submits jobs with {submit}, which is not on "
                           "this machine's PATH: run mlff on a login node of the batch system")
    settings = {key: value for key, value in config.items() if key != "jobs"}
    settings.setdefault("processes", settings["cores"])  # one thread per worker
    return cluster_class(**settings)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, cluster: str | None = None,
                cluster_config: str | os.PathLike | None = None,
                workers: int | None = None) -> Iterator[Any]:
    """A `distributed.Client` for the chosen workers (see the module docstring); the local
    cluster or the batch jobs it started are shut down on exit.

    Raises:
        ClusterError: the scheduler cannot be reached within `CONNECT_TIMEOUT` seconds, both
            or neither of --cluster and --cluster-config, or an unknown batch system.
        DataError: a malformed cluster-config file.
    """
    from distributed import Client, LocalCluster

    if scheduler and cluster:
        raise ClusterError("give --scheduler (a running Dask scheduler) or --cluster (start "
                           "one through the batch system), not both")
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start "
                               "it with `dask scheduler` and give the address it prints") from None
        with client:
            yield client
        return
    if cluster:
        if cluster_config is None:
            raise ClusterError(f"--cluster {cluster} needs --cluster-config FILE (queue, cores, "
                               "memory, walltime, jobs)")
        config = read_cluster_config(cluster_config)
        with batch_cluster(cluster, config) as jobs, Client(jobs) as client:
            jobs.scale(jobs=config.get("jobs", 1))
            yield client
        return
    if cluster_config is not None:
        raise ClusterError("--cluster-config needs --cluster slurm|pbs|lsf")
    count = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as local, \
            Client(local) as client:
        yield client
