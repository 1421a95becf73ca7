"""Sparse attention inside the pipeline: every decision comes from the shared plan, so N stages give the same
latents as one stage for the same backend and config (and sparse differs from dense)."""

from __future__ import annotations

import pytest
import torch

from dualpar.cli import prepare
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.multi import spawn_jobs

BASE = ["frames=45", "schedule.steps=3", "output.latents=true", "output.video=false", "parallel.threads=1",
        "parallel.timeout_s=120"]
BACKENDS = {
    "clustered": ["job=sparse_video", "attention.num_q_clusters=4", "attention.num_k_clusters=8",
                  "attention.density=0.3"],
    "sliding_tile": ["attention=sliding_tile", "attention.window=[1,1,1]"],
}


@pytest.mark.timeout(900)
def test_sparse_backends_identical_across_stages(tmp_path):
    cfgs = []
    for name, extra in BACKENDS.items():
        over = [*BASE, *extra, "parallel.stages=2", "launcher=spawn", f"output.dir={tmp_path / f'2-{name}'}",
                "output.progress=false"]
        cfgs.append(prepare(compose(over))[0])
    spawn_jobs(cfgs)
    render(tmp_path / "dense", BASE)
    dense = load_latents(tmp_path / "dense")
    for name, extra in BACKENDS.items():
        render(tmp_path / f"1-{name}", [*BASE, *extra])
        one, two = load_latents(tmp_path / f"1-{name}"), load_latents(tmp_path / f"2-{name}")
        assert torch.equal(one, two), f"{name}: 2 stages differ from 1 by {(one - two).abs().max()}"
        assert not torch.equal(one, dense), f"{name} really skipped attention pairs"
