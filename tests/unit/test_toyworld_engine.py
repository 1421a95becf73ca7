"""The shipped default model renders through the engine's checkpoint path (model.path), like a Wan checkpoint."""

from __future__ import annotations

from dualpar.metrics import evaluate
from dualpar.models.registry import packaged_model_dir, read_model_info
from dualpar.sinks.probe import read_frames
from dualpar.testing.jobs import render


def test_toyworld_loads_like_a_checkpoint_and_renders_the_prompt(tmp_path):
    root = packaged_model_dir("toyworld")
    info = read_model_info("toyworld", str(root))
    assert info.prediction == "x0" and info.codec.temporal_stride == 2 and info.codec.spatial_stride == 4
    assert info.components["vae"] == ("dualpar", "SpaceToDepthCodec")
    report = render(tmp_path, [f"model.path={root}", "frames=48", "prompt='a red ball moving right'"])
    assert report["frames_written"] == 48 and report["model"]["path"] == str(root)
    frames = read_frames(tmp_path / "video.mp4")
    assert frames.shape == (48, 32, 32, 3)
    scores = evaluate(frames, report["block_frame_starts"], prompt="a red ball moving right")
    assert scores.caption_colour_rate >= 0.9, scores
    assert 0.5 <= scores.blobs_per_frame <= 2.0, scores
