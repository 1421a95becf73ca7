"""SIGTERM/SIGINT to the spawn launcher stops the whole pipeline cleanly (issue 12.3).

A real `dualpar ... launcher=spawn parallel.stages=2` process gets a real signal while it renders: every rank
(and the forkserver) is gone afterwards, the exit code is 128 + signal, stderr has one line with the resume
command and no traceback, a checkpoint exists, and `resume=true` completes the same latents as a run that was
never stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dualpar.checkpoint import latest_checkpoint
from dualpar.testing.jobs import load_latents, render

JOB = ["frames=481", "schedule.steps=8", "output.latents=true", "parallel.threads=1", "parallel.timeout_s=60"]
SPAWN = ["launcher=spawn", "parallel.stages=2"]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_spawn_launcher_checkpoints_stops_all_ranks_and_resumes(tmp_path, sig):
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "dualpar.cli", "model=tiny", *JOB, *SPAWN, f"output.dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [*cmd, "output.progress=false"], stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 200
        while not (out / "checkpoint" / "status.json").exists():  # stage 0 reached its first iteration
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the render never started"
            time.sleep(0.05)
        family = _descendants(proc.pid)
        assert len(family) >= 3, "forkserver and two ranks"
        os.kill(proc.pid, sig)  # to the launcher only, as `kill`, `timeout` and `docker stop` do
        _, err = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err, err
    stopped = [line for line in err.splitlines() if "stopped by" in line]
    assert len(stopped) == 1 and f"stopped by {sig.name}" in stopped[0], err
    assert "resume=true" in stopped[0] and "-m dualpar" in stopped[0]
    deadline = time.monotonic() + 30  # the forkserver leaves when it sees its parent gone
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in family), "no rank outlives the launcher"
    ref = latest_checkpoint(out / "checkpoint")
    assert ref is not None and f"iteration {ref.iteration}," in stopped[0]
    assert not (out / "checkpoint" / "STOP").exists()
    if sig == signal.SIGINT:
        return  # the stop is the same for both signals; resuming is checked once
    report = render(out, [*JOB, *SPAWN, "resume=true"])
    assert report["restart"]["resumed_from_iteration"] == ref.iteration
    whole = tmp_path / "whole"
    render(whole, JOB)
    assert torch.equal(load_latents(out), load_latents(whole))
