"""Who this process is in the pipeline: rank, stage count, neighbours, device. Passed explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerContext:
    """How a launcher started this rank. `init_method` is None for a single local process."""

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

    @staticmethod
    def from_torchrun_env() -> WorkerContext:
        """The context torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (rendezvous through env://)."""
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except KeyError as err:
            raise RuntimeError(
                "launcher=torchrun must be started by torchrun (RANK/WORLD_SIZE unset)"
            ) from err
        return WorkerContext(rank, world, int(os.environ.get("LOCAL_RANK", 0)), "env://")
