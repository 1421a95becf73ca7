"""bf16 across stages, in one process: the hidden states a stage sends are bfloat16 in the static spec the
receiver pre-allocates, the last stage returns float32 velocities, and chaining two stage shards gives the
one-stage pass bit for bit (what the transport carries is exactly what the next layer would have seen)."""

from __future__ import annotations

import torch

from dualpar.cli import prepare
from dualpar.job import JobLayout
from dualpar.models.loader import build_stage, load_prompt_encoder, load_scheduler
from dualpar.models.registry import read_model_info
from dualpar.runner import StageRunner
from dualpar.testing.jobs import compose

CPU = torch.device("cpu")


def _runners(stages: int) -> tuple[JobLayout, list[StageRunner]]:
    cfg, _ = prepare(
        compose(
            [
                "model=tiny",
                "frames=45",
                "schedule.steps=3",
                "model.dtype=bfloat16",
                f"parallel.stages={stages}",
                "launcher=spawn" if stages > 1 else "launcher=local",
            ]
        )
    )
    job = JobLayout(cfg, read_model_info("tiny", None, 0))
    scheduler = load_scheduler(job.info, cfg.schedule.flow_shift)
    scheduler.set_timesteps(job.plan.steps, device="cpu")
    embeds = load_prompt_encoder(job.info, CPU).encode(list(job.texts)).float()
    runners = []
    for rank, layers in enumerate(job.stage_layers):
        stage = build_stage(job.info, layers, rank == 0, rank == stages - 1, torch.bfloat16, CPU)
        runners.append(StageRunner(stage, job, embeds, scheduler.timesteps, torch.bfloat16, CPU))
    return job, runners


def test_bf16_messages_have_the_static_specs_and_chain_to_the_one_stage_pass():
    job, (whole,) = _runners(1)
    _, shards = _runners(3)
    h, w = job.latent_hw
    window = (torch.randn(1, int(job.info.transformer["out_channels"]), job.geometry.window_latents, h, w),)
    for item in job.plan.items[:4]:  # block 0 and 1 at their first steps: with and without a right neighbour
        expected = whole.forward(item, window)
        message = window
        for rank, runner in enumerate(shards):
            message = runner.forward(item, message)
            if rank < len(shards) - 1:
                spec = runner.hidden_spec()
                assert [(t.shape, t.dtype) for t in message] == [(s.shape, s.dtype) for s in spec]
                assert spec[0].dtype == torch.bfloat16, "hidden states travel in the model dtype"
        padded = shards[-1].pad_output(message)
        spec = shards[-1].output_spec()
        assert [(t.shape, t.dtype) for t in padded] == [(s.shape, s.dtype) for s in spec]
        assert spec[0].dtype == torch.float32, "velocities return in float32 (the solver's precision)"
        assert torch.equal(shards[0].unpad_output(item, padded)[0], expected[0]), f"pass {item} differs"
