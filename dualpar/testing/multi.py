"""Run several jobs in one spawned process group (one process start per rank, many checks per start).

Every job gets its own file rendezvous and process group, exactly as a separate launch would; only the
(expensive) interpreter and import start-up is shared. Used by the distributed tests and benchmarks.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import tempfile
import time
from pathlib import Path

from dualpar.config import EngineConfig
from dualpar.topology import WorkerContext


def _child(rank: int, world: int, cfgs: list[EngineConfig], rdzv_dir: str, results) -> None:
    import torch

    from dualpar.launch.worker import worker_main

    torch.set_num_threads(1)
    for i, cfg in enumerate(cfgs):
        ctx = WorkerContext(rank, world, rank, f"file://{Path(rdzv_dir) / f'rdzv-{i}'}")
        report = worker_main(ctx, cfg)
        if rank == 0:
            results.put((i, report))


def spawn_jobs(cfgs: list[EngineConfig], timeout_s: float = 600.0) -> list[dict]:
    """Run `cfgs` (all with the same parallel.stages) one after another in one group of processes."""
    world = cfgs[0].parallel.stages
    assert all(c.parallel.stages == world for c in cfgs), "one process group per stage count"
    mpc = mp.get_context("spawn")
    results = mpc.Queue()
    reports: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dualpar-multi-") as tmp:
        procs = [mpc.Process(target=_child, args=(r, world, cfgs, tmp, results)) for r in range(world)]
        for p in procs:
            p.start()
        # Read reports while the ranks run: a child cannot exit before its queued report has gone through the
        # pipe, so joining first would deadlock on any report larger than the pipe's buffer.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (any(p.is_alive() for p in procs) or not results.empty()):
            try:
                i, rep = results.get(timeout=0.2)
            except queue_mod.Empty:
                continue
            reports[i] = rep
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    codes = [p.exitcode for p in procs]
    if any(c != 0 for c in codes) or len(reports) != len(cfgs):
        raise RuntimeError(f"spawned group failed: exit codes {codes}, {len(reports)}/{len(cfgs)} reports")
    return [reports[i] for i in range(len(cfgs))]
