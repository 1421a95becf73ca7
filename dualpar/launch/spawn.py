"""launcher=spawn: N local processes with a file rendezvous (single nodes and CPU tests).

Ranks are forked from a forkserver that imported the worker module once, so a launch costs one import of torch
and diffusers per parent process rather than one per rank and launch (restarts and test suites relaunch often).

The parent only starts processes and watches them: if any rank exits non-zero, the others get
`parallel.timeout_s` to notice (they will, through their transport) and are then killed, and the launch
fails naming the ranks and exit codes. No launch can hang past its timeouts.

SIGTERM or SIGINT to the launcher (a scheduler, `timeout`, `docker stop`, Ctrl-C) is forwarded as a stop
request: stage 0 checkpoints at its next iteration boundary, every rank exits within `parallel.timeout_s + 60`
seconds (or is killed), and the launcher exits 128 + signal after one line naming the resume command.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from dualpar.checkpoint import STOP_FILE, Interrupted, checkpoint_dir, stopped
from dualpar.config import EngineConfig
from dualpar.errors import ConfigError, PeerError
from dualpar.topology import WorkerContext


def _child(ctx: WorkerContext, cfg: EngineConfig, results, stopping) -> None:
    from dualpar.launch.worker import worker_main

    # The launcher coordinates a stop: a terminal's Ctrl-C reaches every process of the group, and a rank
    # interrupted while loading would die with a traceback. The engine's own handlers (StopRequest) replace
    # these while it renders, so stage 0 still checkpoints on a signal sent to it directly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if cfg.parallel.threads:
        os.environ["OMP_NUM_THREADS"] = str(cfg.parallel.threads)
    try:
        report = worker_main(ctx, cfg)
    except Interrupted as stop:  # a requested stop after a checkpoint: not a crash; the launcher says so
        results.put(stop)
        sys.exit(stop.exit_code)
    except ConfigError as err:  # a user-fixable condition found while running (a full checkpoint disk)
        if ctx.is_first:
            results.put(err)
        sys.exit(2)
    except BaseException:
        if stopping.is_set():  # a peer left because the run was stopped: expected, no traceback
            sys.exit(1)
        raise
    if ctx.rank == 0:
        results.put(report)


def spawn_launch(cfg: EngineConfig) -> dict:
    n = cfg.parallel.stages
    mpc = _context()
    results = mpc.Queue()
    stopping = mpc.Event()
    with tempfile.TemporaryDirectory(prefix="dualpar-rdzv-") as tmp:
        init = f"file://{Path(tmp) / 'rendezvous'}"
        procs = [
            mpc.Process(target=_child, args=(WorkerContext(r, n, r, init), cfg, results, stopping), daemon=False)
            for r in range(n)
        ]
        with _Stopper(cfg, procs, stopping) as stopper:
            for p in procs:
                p.start()
            report = _watch(procs, results, cfg.parallel.timeout_s, stopper)
    return report


class _Stopper:
    """SIGTERM/SIGINT to the launcher: ask stage 0 to checkpoint at its next iteration boundary (the STOP file)
    and let every rank leave quietly; past `grace_s` (or on a second signal) kill them. Ranks never outlive
    the launcher's signal by more than the grace period."""

    def __init__(self, cfg: EngineConfig, procs, stopping):
        self.stop_file = checkpoint_dir(cfg) / STOP_FILE
        self.procs = procs
        self.stopping = stopping
        self.grace_s = cfg.parallel.timeout_s + 60.0
        self.signum: int | None = None
        self.deadline = float("inf")
        self._made_stop_file = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # a second signal: stop now
            self.kill()
            return
        self.signum = signum
        self.deadline = time.monotonic() + self.grace_s
        self.stopping.set()
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self._made_stop_file = not self.stop_file.exists()
        self.stop_file.touch()

    def kill(self) -> None:
        for p in self.procs:
            if p.exitcode is None and p.pid is not None:
                p.kill()

    def poll(self) -> None:
        if time.monotonic() > self.deadline:
            self.kill()

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._made_stop_file:  # the run ended before stage 0 saw it
            self.stop_file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.stop_file.parent.rmdir()  # only if empty


def _context():
    """A forkserver that imported the worker once: ranks start by fork (torch + diffusers import once per
    parent, not once per rank and launch); the server forks before any rank initialises threads or CUDA."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dualpar.launch.worker"])
    return ctx


def _watch(procs, results, timeout_s: float, stopper: _Stopper) -> dict:
    messages = []
    failed_at = None
    while True:
        with contextlib.suppress(queue_mod.Empty):
            messages.append(results.get(timeout=0.2))
        stopper.poll()
        codes = [p.exitcode for p in procs]
        bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if all(c is not None for c in codes):
            break
        if bad and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > timeout_s + 5:
            stopper.kill()
    for p in procs:
        p.join()
    while True:
        try:
            messages.append(results.get_nowait())
        except queue_mod.Empty:
            break
    return _outcome(procs, messages, stopper)


def _outcome(procs, messages: list, stopper: _Stopper) -> dict:
    for msg in messages:
        if isinstance(msg, ConfigError):
            raise msg
    stop = next((m for m in messages if isinstance(m, Interrupted)), None)
    if stopper.signum is not None:  # the launcher was signalled: its signal decides the exit code
        reason = signal.Signals(stopper.signum).name
        if stop is not None:
            raise Interrupted(stop.iteration, reason, stop.path)
        raise stopped(reason, stopper.stop_file.parent)  # stage 0's message did not arrive: what is on disk
    if stop is not None:
        raise stop
    report = next((m for m in messages if isinstance(m, dict)), None)
    codes = [p.exitcode for p in procs]
    if any(c != 0 for c in codes):
        detail = ", ".join(f"rank {r} exit {c}" for r, c in enumerate(codes) if c != 0)
        raise PeerError(f"pipeline failed: {detail}")
    assert report is not None, "rank 0 finished without a report"
    return report
