"""One block with C = 0 must equal diffusers' WanPipeline (same noise, prompts, guidance and scheduler)."""

from __future__ import annotations

import torch

from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import load_latents, render
from dualpar.testing.tiny_checkpoint import build_tiny_pipeline


def test_single_block_equals_wan_pipeline(tmp_path):
    prompt, negative, seed = "a red ball bounces", "blurry", 5
    report = render(tmp_path, [f"prompt='{prompt}'", f"negative_prompt='{negative}'", f"seed={seed}", "frames=9",
                               "schedule.block_latents=3", "schedule.context_latents=0", "schedule.steps=4",
                               "schedule.guidance=5.0", "output.video=false", "output.latents=true"])
    assert report["blocks"] == 1 and report["latent_frames"] == 3
    ours = load_latents(tmp_path)
    noise = CoordinatedNoise(seed, 16, 3, 0, 8, 8).next_block()
    pipe = build_tiny_pipeline()
    with torch.no_grad():
        theirs = pipe(prompt=prompt, negative_prompt=negative, height=64, width=64, num_frames=9,
                      num_inference_steps=4, guidance_scale=5.0, latents=noise.clone(), output_type="latent",
                      max_sequence_length=16).frames
    assert ours.shape == theirs.shape == (1, 16, 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-5
    assert not torch.allclose(ours, noise), "the job actually denoised"
