"""Wan2.2 A14B (two experts switched at boundary_ratio): one block with C = 0 equals diffusers' WanPipeline loaded
from the same tiny directory; the second expert and its guidance scale are really used; every pass picks its
expert from its own step, and the feature cache is read only from a pass of the same expert."""

from __future__ import annotations

import pytest
import torch

from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.tiny_checkpoint import write_tiny_checkpoint

BOUNDARY = 0.8  # tiny UniPC, 4 steps: timesteps 999, 900, 750, 500 -> experts 0, 0, 1, 1


@pytest.fixture(scope="module")
def a14b_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("a14b") / "ckpt", boundary_ratio=BOUNDARY)


def test_reads_both_experts(a14b_dir):
    from dualpar.models.registry import read_model_info

    info = read_model_info("wan2.2-t2v-a14b", str(a14b_dir))
    assert info.experts == ("transformer", "transformer_2") and info.boundary_ratio == BOUNDARY
    assert [info.expert_for(torch.tensor(t)) for t in (999, 900, 800, 799, 750, 500)] == [0, 0, 0, 1, 1, 1]


def test_single_block_equals_wan_pipeline_with_two_experts(tmp_path, a14b_dir):
    from diffusers import WanPipeline

    prompt, negative, seed = "a red ball bounces", "blurry", 5
    common = [
        f"prompt='{prompt}'",
        f"negative_prompt='{negative}'",
        f"seed={seed}",
        "frames=9",
        "schedule.block_latents=3",
        "schedule.context_latents=0",
        "schedule.steps=4",
        "schedule.guidance=5.0",
        "output.video=false",
        "output.latents=true",
    ]
    render(tmp_path / "ours", [f"model.path={a14b_dir}", *common, "schedule.guidance_low=2.0"])
    ours = load_latents(tmp_path / "ours")
    noise = CoordinatedNoise(seed, 16, 3, 0, 8, 8).next_block()
    pipe = WanPipeline.from_pretrained(a14b_dir)
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == BOUNDARY

    def call(guidance_2: float) -> torch.Tensor:
        with torch.no_grad():
            return pipe(
                prompt=prompt,
                negative_prompt=negative,
                height=64,
                width=64,
                num_frames=9,
                num_inference_steps=4,
                guidance_scale=5.0,
                guidance_scale_2=guidance_2,
                latents=noise.clone(),
                output_type="latent",
                max_sequence_length=16,
            ).frames

    theirs = call(2.0)
    assert ours.shape == theirs.shape == (1, 16, 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-4
    # The low-noise expert and its scale matter: ignoring either would be far from the oracle.
    assert (call(5.0) - theirs).abs().max().item() > 1e-2, "guidance_low changes the render"
    pipe.transformer_2 = pipe.transformer
    one_expert = call(2.0)
    assert (one_expert - theirs).abs().max().item() > 1e-2, "transformer_2 is not ignored"
    # schedule.guidance_low defaults to schedule.guidance, as guidance_scale_2 defaults to guidance_scale
    render(tmp_path / "default", [f"model.path={a14b_dir}", *common])
    pipe = WanPipeline.from_pretrained(a14b_dir)
    assert (load_latents(tmp_path / "default") - call(5.0)).abs().max().item() < 1e-4


def test_each_pass_picks_its_expert_and_reads_only_its_experts_cache(tmp_path, a14b_dir):
    from dualpar.cli import prepare
    from dualpar.job import JobLayout
    from dualpar.models.loader import build_experts, load_scheduler
    from dualpar.models.registry import read_model_info
    from dualpar.runner import StageRunner

    raw = compose(
        [
            f"model.path={a14b_dir}",
            "frames=33",
            "schedule.block_latents=2",
            "schedule.context_latents=1",
            "schedule.steps=4",
            "output.video=false",
            "output.latents=true",
            f"output.dir={tmp_path}",
        ]
    )
    cfg, _ = prepare(raw)
    info = read_model_info(cfg.model.name, cfg.model.path)
    job = JobLayout(cfg, info)
    experts = build_experts(info, range(0, 1), True, False, torch.float32, torch.device("cpu"))
    assert len(experts) == 2
    assert not torch.equal(experts[0].blocks["0"].attn1.to_q.weight, experts[1].blocks["0"].attn1.to_q.weight)
    scheduler = load_scheduler(info, None)
    scheduler.set_timesteps(4)
    runner = StageRunner(
        experts[0],
        job,
        torch.zeros(2, 16, 32),
        scheduler.timesteps,
        torch.float32,
        torch.device("cpu"),
        low_noise=experts[1],
    )
    boundary = BOUNDARY * 1000
    straddles = 0
    for item in job.plan.items:
        t = float(scheduler.timesteps[item.step])
        assert runner.expert(item) is experts[0 if t >= boundary else 1]
        right_same = item.has_right and (float(scheduler.timesteps[item.step - 1]) >= boundary) == (t >= boundary)
        assert runner.reads_cache(item) == right_same
        straddles += item.has_right and not right_same
    assert straddles > 0, "the plan has iterations where neighbouring blocks run different experts"
    crowded = [it for it in job.plan.iterations if len(it.items) > 2]
    assert any({runner.expert_of_step[i.step] for i in it.items} == {0, 1} for it in crowded), "both in one iteration"


def test_guidance_low_needs_two_experts(tmp_path, capsys):
    from dualpar.cli import run

    assert run(compose(["schedule.guidance_low=3.0", f"output.dir={tmp_path}"])) == 2
    assert "schedule.guidance_low" in capsys.readouterr().err
