"""Wan2.1 I2V with `image=`: 2 and 3 pipeline stages give one stage's latents bit for bit on a multi-block job
(rank 0's CLIP image tokens reach every stage; stage 0 appends each window's frame mask and condition latents)."""

from __future__ import annotations

import numpy as np
import pytest

from dualpar.testing.jobs import load_latents, render
from dualpar.testing.stages import assert_stages_equal
from dualpar.testing.tiny_i2v import write_tiny_i2v_checkpoint

BASE = [
    "frames=33",
    "schedule.block_latents=2",
    "schedule.context_latents=1",
    "schedule.steps=4",
    "schedule.guidance=5.0",
    "output.video=false",
    "output.latents=true",
    "parallel.threads=1",
    "parallel.timeout_s=120",
]


@pytest.mark.timeout(900)
def test_i2v_stages_bit_identical_to_one_stage(tmp_path):
    from PIL import Image

    ckpt = write_tiny_i2v_checkpoint(tmp_path / "i2v")
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    model = [f"model.path={ckpt}", f"image={image}"]
    report = render(tmp_path / "ref", [*model, *BASE])
    assert report["blocks"] == 4
    ref = load_latents(tmp_path / "ref")
    assert_stages_equal(tmp_path, [*model, *BASE], ref)
