"""End-to-end renders: exact frame counts in a decodable mp4, report, preview, prompt timeline, latents."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from dualpar.cli import prepare
from dualpar.sinks.probe import probe_video, read_frames
from dualpar.testing.jobs import compose, load_latents, render


def test_cli_renders_exact_frame_count(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dualpar.cli",
            "model=tiny",
            "frames=22",
            "seed=3",
            f"output.dir={out}",
            "output.latents=true",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "passes 12/12 (100%) | frames 22/22" in proc.stderr  # 3 blocks x 4 steps; every frame written
    info = probe_video(out / "video.mp4")
    assert info.frames == 22 and (info.width, info.height) == (64, 64)
    assert abs(info.duration_s - 22 / 16) < 1e-3
    assert len(read_frames(out / "video.mp4")) == 22
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == report["frames_written"] == 22
    assert report["blocks"] == 3 and report["latent_frames"] == 7
    assert report["block_frame_starts"] == [0, 9, 17]  # latent 3 (block 1) decodes from frame 9
    assert set(report["phases"]) >= {"load_s", "encode_s", "denoise_s", "decode_s"}
    assert report["peak_rss_bytes"] > 0 and len(report["per_block"]) == 3
    assert (out / "preview.png").stat().st_size > 0
    assert load_latents(out).shape == (1, 16, 7, 8, 8)
    assert not (out / "video.parts").exists()


def test_prompt_timeline_conditions_blocks_and_encodes_once(tmp_path):
    timeline = "prompt=[{frame:0,text:a cat},{frame:14,text:a dog},{frame:30,text:a cat}]"
    _, job = prepare(compose([timeline, "frames=45", f"output.dir={tmp_path}"]))
    assert job.texts == ("a cat", "a dog", "")
    starts = job.block_frame_starts
    assert starts == (0, 9, 17, 25, 33, 41)
    assert job.block_text == tuple(0 if s < 14 else (1 if s < 30 else 0) for s in starts)
    # Without the feature cache a block depends only on itself and earlier blocks, so the blocks before the
    # switch (latents 0..4: blocks 0 and 1) must be untouched and every later block changed.
    common = ["frames=45", "output.video=false", "output.latents=true", "schedule.feature_cache=false"]
    a = render(tmp_path / "a", [timeline, *common])
    b = render(tmp_path / "b", ["prompt='a cat'", *common])
    la, lb = load_latents(tmp_path / "a"), load_latents(tmp_path / "b")
    assert a["blocks"] == b["blocks"] == 6
    assert torch.equal(la[:, :, :5], lb[:, :, :5]), "blocks before the switch are unchanged"
    for k in range(2, 4):  # the "a dog" blocks
        own = slice(2 * k + 1, 2 * k + 3)
        assert not torch.equal(la[:, :, own], lb[:, :, own])


def test_same_seed_same_latents_and_modes_differ(tmp_path):
    base = ["frames=33", "output.video=false", "output.latents=true", "seed=4"]
    render(tmp_path / "a", base)
    render(tmp_path / "b", base)
    render(tmp_path / "c", [*base, "schedule.left_context=same"])
    a, b, c = (load_latents(tmp_path / x) for x in "abc")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_render_from_checkpoint_directory_equals_preset(tmp_path, tiny_checkpoint):
    base = ["frames=25", "output.video=false", "output.latents=true"]
    render(tmp_path / "mem", base)
    render(tmp_path / "disk", [*base, f"model.path={tiny_checkpoint}"])
    assert torch.equal(load_latents(tmp_path / "mem"), load_latents(tmp_path / "disk"))
