"""Wan2.2 TI2V-5B with `image=`: 2 and 3 pipeline stages give one stage's latents bit for bit on a multi-block job
(block 0's first-frame latent and its per-token timesteps are derived identically on every stage), and the
video has exactly the requested frames."""

from __future__ import annotations

import numpy as np
import pytest

from dualpar.testing.jobs import load_latents, render
from dualpar.testing.stages import assert_stages_equal
from dualpar.testing.tiny_ti2v import write_tiny_ti2v_checkpoint

# 4 blocks of P=2 with C=1 (9 latent frames), 4 steps, 128x128 (8x8 latents, 16 tokens per frame)
BASE = [
    "frames=33",
    "height=128",
    "width=128",
    "schedule.block_latents=2",
    "schedule.context_latents=1",
    "schedule.steps=4",
    "schedule.guidance=5.0",
    "output.latents=true",
    "parallel.threads=1",
    "parallel.timeout_s=120",
]


@pytest.mark.timeout(900)
def test_image_conditioned_stages_bit_identical_to_one_stage(tmp_path):
    from PIL import Image

    ckpt = write_tiny_ti2v_checkpoint(tmp_path / "ti2v")
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(image)
    model = [f"model.path={ckpt}", f"image={image}"]
    report = render(tmp_path / "ref", [*model, *BASE])
    assert report["blocks"] == 4 and report["latent_frames"] == 9 and report["frames_written"] == 33
    ref = load_latents(tmp_path / "ref")
    assert_stages_equal(tmp_path, [*model, *BASE, "output.video=false"], ref)
