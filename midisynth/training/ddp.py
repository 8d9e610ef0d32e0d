"""Training on several processes with PyTorch's DistributedDataParallel, launched by torchrun.

    torchrun --standalone --nproc_per_node=N -m midisynth train --config C --data D --out R

torchrun starts N copies of the command and tells each its place (RANK, WORLD_SIZE, LOCAL_RANK in the
environment); `process_group` makes them one process group: gloo on CPU, nccl on CUDA with each process on its local
rank's GPU. Without torchrun a run is one process, and nothing here talks to another.

The config's batch size is the global batch. Each step every process draws the same global batch of windows (the
same sampler, seeded alike) and trains on its own rows of it, batch_size / N of them (`RankBatches`); whatever else
is random in a step is drawn for the whole global batch on every process, and each takes its rows (`RowSlice`).
The global batch's windows and noise are therefore those of a one-process run with the same seed, whatever N is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, Sampler


@dataclass(frozen=True)
class RowSlice:
    """Rows `part` of a global batch of `size` rows."""

    size: int
    part: slice

    def rand(self, generator: torch.Generator, *shape: int) -> torch.Tensor:
        """Uniform draws [rows, *shape]: these rows of one draw [size, *shape] from `generator`."""
        return torch.rand((self.size, *shape), generator=generator)[self.part]

    def randn(self, generator: torch.Generator, *shape: int) -> torch.Tensor:
        """Normal draws [rows, *shape]: these rows of one draw [size, *shape] from `generator`."""
        return torch.randn((self.size, *shape), generator=generator)[self.part]


def whole_batch(size: int) -> RowSlice:
    """All rows of a batch of `size` rows (one process)."""
    return RowSlice(size, slice(None))


@dataclass(frozen=True)
class Ranks:
    """This process's place in a training job: `rank` of `world` processes, `local_rank` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process keeps the EMA weights, evaluates, logs and writes checkpoints."""
        return self.rank == 0

    def rows(self, batch_size: int) -> RowSlice:
        """This process's rows of a global batch of `batch_size` windows; ValueError unless they divide evenly."""
        if batch_size % self.world:
            raise ValueError(
                f"train config: batch_size {batch_size} (the global batch) cannot be shared by "
                f"{self.world} processes; use a multiple of {self.world}, or a number of processes "
                "that divides it"
            )
        per_rank = batch_size // self.world
        return RowSlice(batch_size, slice(self.rank * per_rank, (self.rank + 1) * per_rank))

    def _all_reduce(self, values: list[float], largest: bool = False) -> list[float]:
        """`values` summed element-wise over the processes, or with `largest` their maxima (one all-reduce)."""
        reduced = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            reduced = reduced.cuda()
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX if largest else dist.ReduceOp.SUM)
        return reduced.tolist()

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes."""
        return value if self.world == 1 else self._all_reduce([value])[0] / self.world

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any process."""
        return flag if self.world == 1 else self._all_reduce([float(flag)], largest=True)[0] > 0

    def check_same_step(self, step: int) -> None:
        """ValueError unless every process resumed at the same step (machines that do not share the run directory)."""
        if self.world == 1:
            return
        highest, minus_lowest = self._all_reduce([step, -step], largest=True)
        if highest != -minus_lowest:
            raise ValueError(
                f"the processes resumed at different steps ({-int(minus_lowest)} to {int(highest)}): "
                "every machine must see the same run directory (a shared file system)"
            )

    def barrier(self) -> None:
        """Wait until every process is here."""
        if self.world > 1:
            dist.barrier()


class RankBatches(Sampler[list[int]]):
    """The global batches of `batches` (lists of data set indices), each cut to this process's rows."""

    def __init__(self, batches: BatchSampler, rows: RowSlice):
        self.batches = batches
        self.rows = rows

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rows.part]

    def __len__(self) -> int:
        return len(self.batches)


def torchrun_ranks() -> Ranks:
    """The ranks torchrun gave this process (its environment), or one process without torchrun."""
    try:
        return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    except KeyError:
        return Ranks()


@contextmanager
def process_group(ranks: Ranks, device: str) -> Iterator[str]:
    """Join torchrun's process group for the block (nothing for one process); yields this process's device, where
    "cuda" becomes the local rank's GPU."""
    if ranks.world == 1:
        yield device
        return
    if device.startswith("cuda"):
        device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """`model` as DistributedDataParallel (gradients averaged over the processes) where there are several.

    Some parameters take no part in a step on one process (the encoders, when every row it trains on has its
    conditioning dropped), hence find_unused_parameters."""
    if ranks.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )
