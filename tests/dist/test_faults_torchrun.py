"""torchrun --max-restarts resumes from the last checkpoint: stage 0 is SIGKILLed mid-run, the elastic agent
restarts both ranks with the same command, and the restarted attempt continues (resume=auto semantics) to the
same latents as the single-process render. `python -m dualpar.cli` is the torchrun entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from dualpar.testing.jobs import load_latents, render

BASE = [
    "model=tiny",
    "frames=49",
    "schedule.steps=3",
    "output.latents=true",
    "parallel.threads=1",
    "parallel.timeout_s=60",
]


@pytest.mark.timeout(300)
def test_torchrun_restart_resumes_to_identical_latents(tmp_path):
    out = tmp_path / "torchrun"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--max-restarts", "1", "-m", "dualpar.cli",
        *BASE, "output.video=false", "output.progress=false", "launcher=torchrun", "parallel.stages=2",
        f"output.dir={out}", "checkpoint.every=2", "debug.kill_rank=0", "debug.kill_at_iteration=5",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=270)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the agent and every worker: nothing outlives the test
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 270 s: {stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["restart"]["resumed_from_iteration"] == 4
    assert (out / "checkpoint" / "killed-rank0-iter5.json").is_file()
    render(tmp_path / "local", [*BASE, "output.video=false"])
    assert torch.equal(load_latents(out), load_latents(tmp_path / "local"))
