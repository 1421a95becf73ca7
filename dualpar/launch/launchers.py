"""Pick the launcher named by `launcher=` and run the job; returns rank 0's report (None on other ranks).

A requested stop (SIGTERM/SIGINT or a STOP file: stage 0 checkpointed first) exits with 128 + signal after one
line saying how to continue. Under torchrun, attempts after the first (`--max-restarts`) resume from the latest
checkpoint when one exists (`resume=auto`), so a restarted group continues instead of starting over.
"""

from __future__ import annotations

import os
import sys

from dualpar.checkpoint import Interrupted
from dualpar.config import EngineConfig
from dualpar.topology import WorkerContext


def launch(cfg: EngineConfig) -> dict | None:
    try:
        return _launch(cfg)
    except Interrupted as stop:
        print(f"dualpar: {stop}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None


def _launch(cfg: EngineConfig) -> dict | None:
    if cfg.launcher == "local":
        from dualpar.launch.worker import worker_main

        return worker_main(WorkerContext(), cfg)
    if cfg.launcher == "spawn":
        from dualpar.launch.spawn import spawn_launch

        return spawn_launch(cfg)
    if cfg.launcher == "torchrun":
        from dualpar.launch.worker import worker_main

        ctx = WorkerContext.from_torchrun_env()
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and cfg.resume is False:
            cfg = cfg.replace(resume="auto")  # a restarted attempt continues from the last checkpoint
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
