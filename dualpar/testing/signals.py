"""Signal a real launcher once its render has started, for the stop-and-resume tests of every launcher."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class SignalledRun:
    """How a signalled launcher ended: its exit code, its stderr, and its descendants still alive afterwards."""

    returncode: int
    stderr: str
    survivors: list[int]


def signal_once_started(cmd: list[str], out: Path, sig: int, timeout_s: float = 240) -> SignalledRun:
    """Start `cmd` (a render into `out`) in its own session, send `sig` to the launcher process alone (as `kill`,
    schedulers and `docker stop` do) once stage 0 has reached its first iteration, and wait for it to end. Every
    process it started is killed afterwards whatever happened; `survivors` lists those that had not left by then."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not (out / "checkpoint" / "status.json").exists():  # stage 0 reached its first iteration
            if proc.poll() is not None:
                raise AssertionError(f"the render ended before it was signalled:\n{proc.communicate()[1][-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the render never started")
            time.sleep(0.05)
        family = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=timeout_s)
        deadline = time.monotonic() + 30  # helpers (a forkserver, Ray's daemons) leave when they see it gone
        while time.monotonic() < deadline and _alive(family):
            time.sleep(0.2)
        return SignalledRun(proc.returncode, err, [p.pid for p in _alive(family)])
    finally:
        for p in _alive(family):
            with contextlib.suppress(psutil.Error):
                p.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    return alive
