"""Pick the launcher named by `launcher=` and run the job; returns rank 0's report (None on other ranks).

A requested stop (SIGTERM/SIGINT or a STOP file: stage 0 checkpointed first) exits with 128 + signal after one
line saying how to continue. Under torchrun, attempts after the first (`--max-restarts`) resume from the latest
checkpoint when one exists (`resume=auto`, see `dualpar.validate.restart_config`), so a restarted group
continues instead of starting over.

The process that writes the outputs holds the job's directory lock (dualpar.run_lock) for the whole run: this
process for local and spawn, rank 0 under torchrun, the driver process under Ray (taken in `RayRun.run`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from dualpar.checkpoint import Interrupted
from dualpar.config import EngineConfig
from dualpar.errors import ConfigError
from dualpar.run_lock import run_lock
from dualpar.topology import WorkerContext


def launch(cfg: EngineConfig) -> dict | None:
    """Run the job; ConfigError when another run holds its directories."""
    try:
        with _lock(cfg):
            return _launch(cfg)
    except Interrupted as stop:
        print(f"dualpar: {stop}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None


@contextlib.contextmanager
def _lock(cfg: EngineConfig) -> Iterator[None]:
    if cfg.launcher == "ray" or (cfg.launcher == "torchrun" and os.environ.get("RANK", "0") != "0"):
        yield
        return
    try:
        held = run_lock(cfg)
        held.__enter__()
    except OSError as err:  # the directory cannot be made or written (a read-only or virtual filesystem, ...)
        raise ConfigError("output.dir", f"cannot be used: {err}", "choose a writable directory") from err
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def _launch(cfg: EngineConfig) -> dict | None:
    if cfg.launcher == "local":
        from dualpar.launch.worker import worker_main

        return worker_main(WorkerContext(), cfg)
    if cfg.launcher == "spawn":
        from dualpar.launch.spawn import spawn_launch

        return spawn_launch(cfg)
    if cfg.launcher == "torchrun":
        from dualpar.launch.worker import worker_main

        ctx = WorkerContext.from_torchrun_env()  # validation checked the torchrun environment
        report = worker_main(ctx, cfg)
        return report if ctx.rank == 0 else None
    if cfg.launcher == "ray":
        from dualpar.launch.ray import ray_launch

        return ray_launch(cfg)
    raise ValueError(f"unknown launcher {cfg.launcher!r}")
