"""Data-parallel training with `torch.distributed` (one process per core group or GPU).

Started by torchrun (`torchrun --nproc-per-node N mlff train ...`), which sets RANK,
LOCAL_RANK and WORLD_SIZE. Every process reads all the training frames and walks the same
seeded sequence of global batches (`config.batch_size` frames each, as one process would); process
r takes the r-th contiguous shard of each batch. Its loss is its exact share of the whole
batch's loss: every loss term divides by batch-wide totals (`losses.BatchTotals`), computed
from the whole batch's frames, which every process has. DistributedDataParallel averages the
shares' gradients over the W processes, so each process back-propagates W × its share; the
averaged gradient is then the whole batch's, and every optimiser step is the single-process
step up to the order of floating-point sums. The balance weights of cluster losses and the
sample weights (ASTEROID's) are computed once over the whole training set, on every process,
as in one process.

Rank 0 alone writes run.json, checkpoints, best.pt and log.csv; the decisions that end a run
(early stopping, time budget) are rank 0's, broadcast, so every process stops at one epoch.
Backends: gloo on CPU, nccl on CUDA (each process takes the GPU numbered by its LOCAL_RANK).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from mlff_core.errors import MLFFError

#: How long a process waits for the others at a collective before giving up.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the data-parallel processes (rank 0 writes the files)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> ProcessGroup | None:
        """The running process group, or None for a single process."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", dist.get_rank())))

    @property
    def device(self) -> torch.device:
        """Where this backend's collectives take their tensors (nccl: this process's GPU)."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This process's contiguous share of a batch's graph indices (empty when the batch
        has fewer graphs than there are processes)."""
        return np.array_split(indices, self.world_size)[self.rank]

    def sum(self, values: Sequence[float]) -> list[float]:
        """The sums over the processes of `values`, rank 0's bits on every process."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        dist.broadcast(tensor, src=0)
        return tensor.cpu().tolist()

    def total(self, value: Tensor) -> float:
        """The sum over the processes of a scalar (NaN anywhere gives NaN everywhere)."""
        tensor = value.detach().to(self.device, torch.float64).reshape(1)
        dist.all_reduce(tensor)
        return float(tensor.cpu())

    def main_decides(self, flag: bool) -> bool:
        """Rank 0's `flag` on every process (for decisions that end a run)."""
        tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def broadcast_json(self, document: Any) -> Any:
        """Rank 0's JSON-serialisable `document` on every process (sent as UTF-8 bytes, never
        pickled)."""
        data = json.dumps(document).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        buffer = torch.zeros(int(size), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return json.loads(bytes(buffer.cpu().numpy()).decode())


def is_main_process() -> bool:
    """Whether this process writes shared files (rank 0, or the only process)."""
    group = ProcessGroup.current()
    return group is None or group.is_main


def launched_processes() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise MLFFError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a process count") \
            from None


def process_device(device: str, group: ProcessGroup | None) -> torch.device:
    """The device this process trains on: `cuda` (no index) means the GPU numbered by the
    process's LOCAL_RANK under torchrun."""
    if group is not None and device == "cuda":
        return torch.device("cuda", group.local_rank)
    return torch.device(device)


@contextlib.contextmanager
def data_parallel(device: str = "cpu") -> Iterator[ProcessGroup | None]:
    """Join the process group torchrun started (gloo on CPU, nccl on CUDA) for the duration;
    yields None outside torchrun (one process)."""
    if launched_processes() < 2 or (dist.is_available() and dist.is_initialized()):
        yield ProcessGroup.current()
        return
    if not dist.is_available():
        raise MLFFError("this torch build has no torch.distributed; run one process")
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise MLFFError(f"process {local} of this node needs GPU {local}, but "
                            f"{torch.cuda.device_count()} GPU(s) are visible; start at most "
                            "that many processes per node (torchrun --nproc-per-node)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield ProcessGroup.current()
    finally:
        dist.destroy_process_group()


class ShareOfLoss(nn.Module):
    """The loss share of a batch shard as a module's forward pass, which is what
    DistributedDataParallel synchronises the gradients of.

    Args:
        model: the module whose parameters are trained (registered, so DDP finds them).
        loss_of: (batch, totals) -> scalar loss share, using `model`.
    """

    def __init__(self, model: nn.Module, loss_of: Callable[..., Tensor]):
        super().__init__()
        self.model = model
        self._loss_of = loss_of

    def forward(self, batch: Any, totals: Any) -> Tensor:
        return self._loss_of(batch, totals)


def distributed_loss(model: nn.Module, loss_of: Callable[..., Tensor],
                     device: torch.device) -> nn.Module:
    """`ShareOfLoss` wrapped in DistributedDataParallel (buffers are equal on every process
    and never trained, so they are not broadcast at every step)."""
    from torch.nn.parallel import DistributedDataParallel

    # The readouts' last [1, H] weight gets a gradient with stride (1, 1) against the bucket's
    # (H, 1): they differ only along a dimension of size 1, so the memory layout is the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(ShareOfLoss(model, loss_of),
                                   device_ids=[device] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
