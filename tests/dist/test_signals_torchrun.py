"""SIGTERM to a torchrun agent (what schedulers send) stops a dualpar job cleanly: the agent relays it to the
ranks, stage 0 checkpoints at the next iteration boundary and prints one line saying how to continue, the other
rank leaves without an error, every process is gone, and resuming completes the latents of a run never stopped.
The agent's own exit code and its SignalException report are torchrun's."""

from __future__ import annotations

import signal
import sys

import pytest
import torch

from dualpar.checkpoint import latest_checkpoint
from dualpar.testing.jobs import load_latents, render
from dualpar.testing.signals import signal_once_started

JOB = ["model=tiny", "frames=481", "schedule.steps=8", "output.latents=true", "parallel.threads=1"]


@pytest.mark.timeout(400)
def test_sigterm_to_torchrun_checkpoints_and_every_rank_leaves(tmp_path):
    out = tmp_path / "job"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dualpar.cli",
        *JOB, "launcher=torchrun", "parallel.stages=2", f"output.dir={out}", "output.progress=false",
    ]  # fmt: skip
    run = signal_once_started(cmd, out, signal.SIGTERM)
    assert run.survivors == [], "no rank outlives the agent"
    stopped = [line for line in run.stderr.splitlines() if line.startswith("dualpar: stopped by SIGTERM")]
    assert len(stopped) == 1, run.stderr[-3000:]
    assert "continue with the same torchrun command plus resume=true" in stopped[0]
    assert "dualpar: error" not in run.stderr, "the relay leaves quietly once stage 0 has stopped"
    ref = latest_checkpoint(out / "checkpoint")
    assert ref is not None and f"iteration {ref.iteration}," in stopped[0]
    report = render(out, [*JOB, "resume=true"])  # one process resumes what two stages started
    assert report["restart"]["resumed_from_iteration"] == ref.iteration
    render(tmp_path / "whole", JOB)
    assert torch.equal(load_latents(out), load_latents(tmp_path / "whole"))
