"""SkyReels-V2 diffusion forcing: 2 and 3 pipeline stages give one stage's latents bit for bit on a multi-block job
(every window's left context conditioned at block k-1's own noise level, the feature cache on), for both
left-context modes."""

from __future__ import annotations

import pytest

from dualpar.testing.jobs import load_latents, render
from dualpar.testing.stages import assert_stages_equal
from dualpar.testing.tiny_skyreels import write_tiny_skyreels_checkpoint

# 4 blocks of P=2 with C=1, 3 steps: up to 3 blocks in flight at three different noise levels
BASE = [
    "frames=33",
    "schedule.block_latents=2",
    "schedule.context_latents=1",
    "schedule.steps=3",
    "schedule.guidance=5.0",
    "output.video=false",
    "output.latents=true",
    "parallel.threads=1",
    "parallel.timeout_s=120",
]


@pytest.mark.timeout(900)
def test_skyreels_stages_bit_identical_to_one_stage(tmp_path):
    ckpt = write_tiny_skyreels_checkpoint(tmp_path / "skyreels")
    model = [f"model.path={ckpt}"]
    refs = {}
    for mode in ("ahead", "same"):
        report = render(tmp_path / f"ref-{mode}", [*model, *BASE, f"schedule.left_context={mode}"])
        assert report["blocks"] == 4
        refs[mode] = load_latents(tmp_path / f"ref-{mode}")
    assert (refs["ahead"] - refs["same"]).abs().max().item() > 1e-3, "the context's noise level matters"
    assert_stages_equal(tmp_path, [*model, *BASE, "schedule.left_context=ahead"], refs["ahead"], [(2, [])])
    same = ["schedule.left_context=same"]
    assert_stages_equal(tmp_path, [*model, *BASE, *same], refs["same"], [(3, ["parallel.split=[2,1,1]"])])
