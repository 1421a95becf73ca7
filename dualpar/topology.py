"""Who this process is in the pipeline: rank, stage count, neighbours, device. Passed explicitly.

`bind_device` is the one place a rank chooses its compute device: on CUDA it binds the process to
`cuda:<local_rank mod device count>` with `torch.cuda.set_device` before anything touches CUDA, so every rank
works on its own GPU (or, with `parallel.transport=host_staged`, ranks may share one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WorkerContext:
    """How a launcher started this rank. `init_method` is None for a single local process.

    `local_rank` is the rank's index on its node: LOCAL_RANK under torchrun, the rank under spawn, 0 under Ray
    (whose actors see only their own GPU through CUDA_VISIBLE_DEVICES).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    init_method: str | None = None  # file://... (spawn, tests), env:// (torchrun, Ray)

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    @property
    def is_last(self) -> bool:
        return self.rank == self.world_size - 1

    @property
    def next_rank(self) -> int:
        """Where this stage's output goes: the next stage, or stage 0 from the last one (the pipeline is a ring)."""
        return (self.rank + 1) % self.world_size

    @property
    def prev_rank(self) -> int:
        """Where this stage's input comes from (the last stage feeds stage 0)."""
        return (self.rank - 1) % self.world_size

    @staticmethod
    def from_torchrun_env() -> WorkerContext:
        """The context torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (rendezvous through env://)."""
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except KeyError as err:
            raise RuntimeError("launcher=torchrun must be started by torchrun (RANK/WORLD_SIZE unset)") from err
        return WorkerContext(rank, world, int(os.environ.get("LOCAL_RANK", 0)), "env://")


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The compute device `model.device` names for the rank with this node-local index (no side effects)."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


def bind_device(name: str, local_rank: int = 0) -> torch.device:
    """`pick_device`, and on CUDA make it this process's current device before any CUDA work, so that
    kernels, NCCL communicators and caching allocators of different ranks never land on cuda:0 together."""
    device = pick_device(name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device.index)
    return device
