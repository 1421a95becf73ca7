"""A stop whose word from stage 0 was lost still gives the right advice: resume from the newest valid checkpoint
on disk, and start over (output.overwrite=true) only when there is none. Advice to discard checkpoints that exist
would lose the render."""

from __future__ import annotations

from dualpar.checkpoint import latest_checkpoint, stopped
from dualpar.testing.crash import crash_in_process

JOB = [
    "frames=49",
    "schedule.steps=3",
    "parallel.threads=1",
    "output.video=false",
    "output.latents=true",
    "checkpoint.every=2",
]


def test_lost_stop_message_advises_resume_when_a_checkpoint_exists(tmp_path, monkeypatch):
    out = tmp_path / "job"
    crash_in_process(monkeypatch, out, [*JOB, "debug.kill_rank=0", "debug.kill_at_iteration=5"])
    ref = latest_checkpoint(out / "checkpoint")
    assert ref is not None and ref.iteration == 4
    stop = stopped("SIGTERM", out / "checkpoint")
    assert stop.iteration == 4 and stop.exit_code == 143
    assert "stopped by SIGTERM at iteration 4" in str(stop) and "resume=true" in str(stop)
    assert "overwrite" not in str(stop)


def test_lost_stop_message_advises_starting_over_without_a_checkpoint(tmp_path):
    stop = stopped("SIGINT", tmp_path / "checkpoint")
    assert stop.iteration == -1 and stop.exit_code == 130
    assert "before the first checkpoint" in str(stop) and "output.overwrite=true" in str(stop)
