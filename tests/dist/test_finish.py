"""Finishing is idempotent (issue 12.4): a crash at any step of finishing a checkpointed render resumes with
`resume=true` and completes the same outputs as a run that never crashed.

Finishing renames the latents file, joins the video segments (a full disk can strike here), writes the report,
clears the checkpoints and only then deletes the segments. Each step is made to fail in turn, in-process (the
crash is an exception no handler catches), with the real files of the render left on disk as they were.
"""

from __future__ import annotations

import errno

import pytest
import torch

from dualpar.checkpoint import Stage0Checkpointer
from dualpar.sinks import mp4
from dualpar.sinks.latents import LatentsWriter
from dualpar.sinks.probe import read_frames
from dualpar.testing.crash import SimulatedCrash
from dualpar.testing.jobs import load_latents, render

BASE = ["frames=49", "schedule.steps=3", "output.latents=true", "parallel.threads=1", "checkpoint.every=2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    render(out, BASE)
    return out


def _after(original):
    def crash_after(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise SimulatedCrash("after " + original.__qualname__)

    return crash_after


def _disk_full_join(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


CRASHES = {
    "latents_renamed": (LatentsWriter, "close", _after(LatentsWriter.close)),
    "join_disk_full": (mp4, "concat_segments", _disk_full_join),
    "video_joined": (mp4.Mp4SegmentSink, "close", _after(mp4.Mp4SegmentSink.close)),
    "report_written": (Stage0Checkpointer, "finish", lambda self: (_ for _ in ()).throw(SimulatedCrash("finish"))),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("step", list(CRASHES))
def test_crash_while_finishing_resumes_to_the_same_outputs(tmp_path, monkeypatch, reference, step):
    owner, name, replacement = CRASHES[step]
    out = tmp_path / step
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises((SimulatedCrash, OSError)):
        render(out, BASE)
    monkeypatch.undo()
    assert list((out / "checkpoint").glob("iter-*.pt")), "the checkpoints outlive a crash in finishing"
    assert not (out / "video.mp4.tmp").exists(), "a failed join leaves no partial file"
    report = render(out, [*BASE, "resume=true"])
    assert report["restart"]["resumed_from_iteration"] is not None
    assert torch.equal(load_latents(out), load_latents(reference))
    frames = read_frames(out / "video.mp4")
    assert len(frames) == 49 and (frames == read_frames(reference / "video.mp4")).all()
    assert not (out / "video.parts").exists() and not list((out / "checkpoint").glob("iter-*"))
    assert not list(out.glob("*.tmp"))
