"""Work that leaves one machine: labelling and exploration MD on a Dask cluster (local, a
running scheduler, or a batch system through dask-jobqueue).

    cluster.py     dask_client(): the Client for --scheduler / --cluster / --workers
    labelling.py   label_frames_on_cluster(): frames labelled in chunks, each finished chunk
                   written atomically (a killed run resumes), failed frames retried and then
                   reported by index
    exploration.py cluster_md_runner(): the MD runs of a continued-learning pass as tasks
    tasks.py       cluster_map(): independent calls as tasks (ASTEROID's γ candidates)
"""

from mlff_core.distributed.cluster import dask_client, read_cluster_config
from mlff_core.distributed.exploration import MDRun, cluster_md_runner, serial_md_runner
from mlff_core.distributed.labelling import (
    ChunkStore,
    LabellingFailed,
    cluster_labeller,
    label_frames_on_cluster,
)
from mlff_core.distributed.tasks import cluster_map

__all__ = ["ChunkStore", "LabellingFailed", "MDRun", "cluster_labeller", "cluster_map",
           "cluster_md_runner", "dask_client", "label_frames_on_cluster", "read_cluster_config",
           "serial_md_runner"]
