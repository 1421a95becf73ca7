"""Wan2.2 A14B (two experts): 2 and 3 pipeline stages give one stage's latents bit for bit, on a multi-block job
where blocks run by different experts share iterations (and the feature cache is skipped where they meet)."""

from __future__ import annotations

import pytest

from dualpar.testing.jobs import load_latents, render
from dualpar.testing.stages import assert_stages_equal
from dualpar.testing.tiny_checkpoint import write_tiny_checkpoint

# 4 blocks of P=2 with C=1, 4 steps (timesteps 999, 900, 750, 500; boundary 800 -> experts 0, 0, 1, 1)
BASE = [
    "frames=33",
    "schedule.block_latents=2",
    "schedule.context_latents=1",
    "schedule.steps=4",
    "schedule.guidance=5.0",
    "schedule.guidance_low=3.0",
    "output.video=false",
    "output.latents=true",
    "parallel.threads=1",
    "parallel.timeout_s=120",
]


@pytest.mark.timeout(900)
def test_two_experts_stages_bit_identical_to_one_stage(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "a14b", boundary_ratio=0.8)
    model = [f"model.path={ckpt}"]
    report = render(tmp_path / "ref", [*model, *BASE])
    ref = load_latents(tmp_path / "ref")
    assert report["blocks"] == 4
    # One expert (transformer_2 ignored) would give another video: the experts differ on every layer.
    single = write_tiny_checkpoint(tmp_path / "one", boundary_ratio=None)
    render(tmp_path / "one-out", [f"model.path={single}", *BASE[:5], *BASE[6:]])
    assert (load_latents(tmp_path / "one-out") - ref).abs().max().item() > 1e-2
    assert_stages_equal(tmp_path, [*model, *BASE], ref)
