"""Wan2.1 I2V (`WanImageToVideoPipeline`: CLIP image tokens, 36 input channels = noise + 4-channel frame mask +
condition latents): one block with C = 0 equals diffusers' pipeline on the same tiny directory; `image=` is
required (exit 2 before weights load without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dualpar.errors import ConfigError
from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.tiny_i2v import TEXT_LEN, write_tiny_i2v_checkpoint

PROMPT, NEGATIVE, SEED = "a red ball bounces", "blurry", 5


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory) -> Path:
    return write_tiny_i2v_checkpoint(tmp_path_factory.mktemp("i2v") / "ckpt")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "first.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(path)
    return path


def test_single_block_equals_wan_i2v_pipeline(tmp_path, i2v_dir, image_file):
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from PIL import Image

    report = render(
        tmp_path,
        [
            f"model.path={i2v_dir}",
            f"image={image_file}",
            f"prompt='{PROMPT}'",
            f"negative_prompt='{NEGATIVE}'",
            f"seed={SEED}",
            "frames=9",
            "schedule.block_latents=3",
            "schedule.context_latents=0",
            "schedule.steps=4",
            "schedule.guidance=5.0",
            "output.latents=true",
        ],
    )
    assert report["blocks"] == 1 and report["frames_written"] == 9
    ours = load_latents(tmp_path)
    pipe = WanImageToVideoPipeline.from_pretrained(i2v_dir)
    assert pipe.image_encoder is not None and pipe.transformer.config.in_channels == 36
    # the I2V pipeline's own prompt cleaning needs ftfy: it takes WanPipeline's embeddings of the same encoder
    t2v = WanPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.scheduler, transformer=pipe.transformer)
    noise = CoordinatedNoise(SEED, 16, 3, 0, 8, 8).next_block()
    with torch.no_grad():
        embeds, negative = t2v.encode_prompt(PROMPT, NEGATIVE, True, max_sequence_length=TEXT_LEN)
        theirs = pipe(
            image=Image.open(image_file).convert("RGB"),
            prompt_embeds=embeds,
            negative_prompt_embeds=negative,
            height=64,
            width=64,
            num_frames=9,
            num_inference_steps=4,
            guidance_scale=5.0,
            latents=noise.clone(),
            output_type="latent",
        ).frames
    assert ours.shape == theirs.shape == (1, 16, 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_i2v_needs_an_image(tmp_path, i2v_dir, monkeypatch):
    import dualpar.models.loader as loader
    from dualpar.api import prepare

    monkeypatch.setattr(loader, "read_owned_tensors", lambda *a, **k: pytest.fail("weights were loaded"))
    with pytest.raises(ConfigError) as err:
        prepare(compose([f"model.path={i2v_dir}", f"output.dir={tmp_path / 'out'}"]))
    assert err.value.key == "image"


@pytest.mark.timeout(600)
def test_i2v_run_resumes_to_the_uninterrupted_latents(tmp_path, i2v_dir, image_file, monkeypatch):
    """The condition latents and CLIP tokens are derived from the image file again on a resume."""
    from dualpar.checkpoint import FaultInjector
    from dualpar.testing.crash import SimulatedCrash

    multi = [f"model.path={i2v_dir}", f"image={image_file}", f"seed={SEED}", "frames=33", "schedule.steps=4"]
    multi += ["schedule.block_latents=2", "schedule.context_latents=1", "output.video=false", "output.latents=true"]
    render(tmp_path / "ref", multi)

    def die(self):
        raise SimulatedCrash(f"rank {self.rank} at iteration {self.iteration}")

    monkeypatch.setattr(FaultInjector, "die", die)
    kill = ["checkpoint.every=2", "debug.kill_rank=0", "debug.kill_at_iteration=5"]
    with pytest.raises(SimulatedCrash):
        render(tmp_path / "crashed", [*multi, *kill])
    monkeypatch.undo()
    report = render(tmp_path / "crashed", [*multi, *kill, "resume=true"])
    assert report["restart"]["resumed_from_iteration"] == 4
    assert torch.equal(load_latents(tmp_path / "crashed"), load_latents(tmp_path / "ref"))
