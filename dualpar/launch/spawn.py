"""launcher=spawn: N local processes with a file rendezvous (single nodes and CPU tests).

Ranks are forked from a forkserver that imported the worker module once, so a launch costs one import of torch
and diffusers per parent process rather than one per rank and launch (restarts and test suites relaunch often).

The parent only starts processes and watches them: if any rank exits non-zero, the others get
`parallel.timeout_s` to notice (they will, through their transport) and are then killed, and the launch
fails naming the ranks and exit codes. No launch can hang past its timeouts.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import tempfile
import time
from pathlib import Path

from dualpar.checkpoint import Interrupted
from dualpar.config import EngineConfig
from dualpar.errors import PeerError
from dualpar.topology import WorkerContext


def _child(ctx: WorkerContext, cfg: EngineConfig, results) -> None:
    from dualpar.launch.worker import worker_main

    if cfg.parallel.threads:
        os.environ["OMP_NUM_THREADS"] = str(cfg.parallel.threads)
    try:
        report = worker_main(ctx, cfg)
    except Interrupted as stop:  # a requested stop after a checkpoint: not a crash
        print(f"dualpar: rank {ctx.rank}: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    if ctx.rank == 0:
        results.put(report)


def spawn_launch(cfg: EngineConfig) -> dict:
    n = cfg.parallel.stages
    mpc = _context()
    results = mpc.Queue()
    with tempfile.TemporaryDirectory(prefix="dualpar-rdzv-") as tmp:
        init = f"file://{Path(tmp) / 'rendezvous'}"
        procs = [
            mpc.Process(target=_child, args=(WorkerContext(r, n, r, init), cfg, results), daemon=False)
            for r in range(n)
        ]
        for p in procs:
            p.start()
        report = _watch(procs, results, cfg.parallel.timeout_s)
    return report


def _context():
    """A forkserver that imported the worker once: ranks start by fork (torch + diffusers import once per
    parent, not once per rank and launch); the server forks before any rank initialises threads or CUDA."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dualpar.launch.worker"])
    return ctx


def _watch(procs, results, timeout_s: float) -> dict:
    report = None
    failed_at = None
    interrupts = 0
    while True:
        try:
            with contextlib.suppress(queue_mod.Empty):
                report = results.get(timeout=0.2)
        except KeyboardInterrupt:  # Ctrl-C reached the ranks too: stage 0 checkpoints, then they all exit
            interrupts += 1
            if interrupts > 1:
                raise
        codes = [p.exitcode for p in procs]
        bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if all(c is not None for c in codes):
            break
        if bad and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > timeout_s + 5:
            for p in procs:
                if p.exitcode is None:
                    p.kill()
    for p in procs:
        p.join()
    if report is None:
        try:
            report = results.get_nowait()
        except queue_mod.Empty:
            report = None
    codes = [p.exitcode for p in procs]
    if any(c != 0 for c in codes):
        detail = ", ".join(f"rank {r} exit {c}" for r, c in enumerate(codes) if c != 0)
        raise PeerError(f"pipeline failed: {detail}")
    assert report is not None, "rank 0 finished without a report"
    return report
