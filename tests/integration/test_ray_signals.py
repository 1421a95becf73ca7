"""SIGTERM to `dualpar launcher=ray` stops the job cleanly: stage 0 checkpoints at the next iteration boundary
(the launcher asks through the STOP file), the command prints one line with the resume command and exits 143,
the local Ray cluster it started is gone, and resuming completes the latents of a run never stopped."""

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
def test_sigterm_to_the_ray_launcher_checkpoints_and_exits_143(tmp_path):
    out = tmp_path / "job"
    cmd = [
        sys.executable, "-m", "dualpar.cli", *JOB, "launcher=ray", "parallel.stages=2", "ray.num_cpus=2",
        f"output.dir={out}", "output.progress=false",
    ]  # fmt: skip
    run = signal_once_started(cmd, out, signal.SIGTERM)
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    stopped = [line for line in run.stderr.splitlines() if line.startswith("dualpar: stopped by SIGTERM")]
    assert len(stopped) == 1 and "-m dualpar" in stopped[0] and stopped[0].endswith("resume=true"), run.stderr
    assert run.survivors == [], "the Ray cluster the command started is gone with it"
    ref = latest_checkpoint(out / "checkpoint")
    assert ref is not None and f"iteration {ref.iteration}," in stopped[0]
    report = render(out, [*JOB, "resume=true"])
    assert report["restart"]["resumed_from_iteration"] == ref.iteration
    render(tmp_path / "whole", JOB)
    assert torch.equal(load_latents(out), load_latents(tmp_path / "whole"))
