"""Pick the launcher named by `launcher=` and run the job; returns rank 0's report (None on other ranks)."""

from __future__ import annotations

from dualpar.config import EngineConfig
from dualpar.topology import WorkerContext


def launch(cfg: EngineConfig) -> dict | None:
    if cfg.launcher == "local":
        from dualpar.launch.worker import worker_main

        return worker_main(WorkerContext(), cfg)
    if cfg.launcher == "spawn":
        from dualpar.launch.spawn import spawn_launch

        return spawn_launch(cfg)
    if cfg.launcher == "torchrun":
        from dualpar.launch.worker import worker_main

        ctx = WorkerContext.from_torchrun_env()
        if ctx.world_size != cfg.parallel.stages:
            raise ValueError(
                f"torchrun started {ctx.world_size} processes but parallel.stages={cfg.parallel.stages}"
            )
        report = worker_main(ctx, cfg)
        return report if ctx.rank == 0 else None
    if cfg.launcher == "ray":
        from dualpar.launch.ray import ray_launch

        return ray_launch(cfg)
    raise ValueError(f"unknown launcher {cfg.launcher!r}")
