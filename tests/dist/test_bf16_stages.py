"""bfloat16 across 2 and 3 stages, and the host-staged transport, give the one-stage render bit for bit
(CPU, gloo, one thread per process). bf16 hidden states travel between stages; velocities return in float32."""

from __future__ import annotations

import pytest
import torch

from dualpar.cli import prepare
from dualpar.models.registry import read_model_info
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.multi import spawn_jobs

BASE = [
    "frames=45",
    "schedule.steps=3",
    "output.latents=true",
    "output.video=false",
    "parallel.threads=1",
    "parallel.timeout_s=120",
]
BF16 = ["model.dtype=bfloat16"]
HIDDEN_DIM = read_model_info("tiny", None, 0).hidden_dim


def _configs(tmp_path, stages: int, variants: list[tuple[str, list[str]]]):
    return [
        prepare(
            compose(
                [
                    *BASE,
                    *extra,
                    f"parallel.stages={stages}",
                    "launcher=spawn",
                    "output.progress=false",
                    f"output.dir={tmp_path / f'{stages}-{name}'}",
                ]
            )
        )[0]
        for name, extra in variants
    ]


@pytest.mark.timeout(900)
def test_bf16_and_host_staged_stages_equal_one_stage(tmp_path):
    render(tmp_path / "ref-bf16", [*BASE, *BF16])
    render(tmp_path / "ref-fp32", BASE)
    ref = {"bf16": load_latents(tmp_path / "ref-bf16"), "fp32": load_latents(tmp_path / "ref-fp32")}
    assert not torch.equal(ref["bf16"], ref["fp32"]), "bf16 really ran in bf16"
    runs = {2: [("bf16", BF16), ("staged", ["parallel.transport=host_staged"])], 3: [("bf16", BF16)]}
    for stages, variants in runs.items():
        reports = spawn_jobs(_configs(tmp_path, stages, variants))
        for (name, _), report in zip(variants, reports):
            got = load_latents(tmp_path / f"{stages}-{name}")
            want = ref["fp32" if name == "staged" else name]
            assert got.dtype == torch.float32, "the solver's latents stay float32 whatever the model dtype"
            assert torch.equal(got, want), f"{stages} stages, {name}: max diff {(got - want).abs().max()}"
            assert report["plan"]["stages"] == stages
            plan, elem = report["plan"], 2 if name == "bf16" else 4
            tokens = plan["tokens_per_frame"] * (plan["block_latents"] + plan["context_latents"])
            assert plan["hidden_bytes"] == 2 * tokens * HIDDEN_DIM * elem, "cond+uncond rows in the model dtype"
            assert report["runtime"]["dtype"] == ("bfloat16" if name == "bf16" else "float32")
