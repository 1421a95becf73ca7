"""Wan2.2 TI2V-5B (48-channel residual VAE, 4x16x16 compression, `expand_timesteps`): one block with C = 0 equals
diffusers' WanPipeline (text-to-video) and WanImageToVideoPipeline (`image=`: the first-frame latent at timestep
0) loaded from the same tiny directory; the output has exactly the requested frames; `image=` is validated
before weights load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dualpar.errors import ConfigError
from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.tiny_ti2v import write_tiny_ti2v_checkpoint

PROMPT, NEGATIVE, SEED = "a red ball bounces", "blurry", 5
COMMON = [
    f"prompt='{PROMPT}'",
    f"negative_prompt='{NEGATIVE}'",
    f"seed={SEED}",
    "frames=9",
    "height=128",
    "width=128",
    "schedule.block_latents=3",
    "schedule.context_latents=0",
    "schedule.steps=4",
    "schedule.guidance=5.0",
    "output.latents=true",
]


@pytest.fixture(scope="module")
def ti2v_dir(tmp_path_factory) -> Path:
    return write_tiny_ti2v_checkpoint(tmp_path_factory.mktemp("ti2v") / "ckpt")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "first.png"
    pixels = np.random.default_rng(0).integers(0, 256, (96, 112, 3), dtype=np.uint8)  # resized to 128x128
    Image.fromarray(pixels).save(path)
    return path


def _oracle(ti2v_dir: Path, image: Path | None) -> torch.Tensor:
    """diffusers' own pipeline on the directory with the engine's block-0 noise, latents out."""
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from PIL import Image

    t2v = WanPipeline.from_pretrained(ti2v_dir)
    assert t2v.config.expand_timesteps
    noise = CoordinatedNoise(SEED, 48, 3, 0, 8, 8).next_block()
    common = dict(height=128, width=128, num_frames=9, num_inference_steps=4, guidance_scale=5.0, output_type="latent")
    with torch.no_grad():
        # WanImageToVideoPipeline's own prompt cleaning needs ftfy: both take WanPipeline's embeddings
        embeds, negative = t2v.encode_prompt(PROMPT, NEGATIVE, do_classifier_free_guidance=True, max_sequence_length=16)
        if image is None:
            return t2v(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=noise.clone(), **common).frames
        i2v = WanImageToVideoPipeline.from_pretrained(ti2v_dir, image_encoder=None, image_processor=None)
        assert i2v.config.expand_timesteps
        first = Image.open(image).convert("RGB")
        return i2v(
            image=first, prompt_embeds=embeds, negative_prompt_embeds=negative, latents=noise.clone(), **common
        ).frames


def test_reads_ti2v_directory(ti2v_dir):
    from dualpar.models.registry import read_model_info

    info = read_model_info("wan2.2-ti2v-5b", str(ti2v_dir))
    assert info.expand_timesteps and info.codec.z_dim == 48
    assert (info.codec.temporal_stride, info.codec.spatial_stride) == (4, 16) and info.pixel_multiple == 32


def test_text_to_video_equals_wan_pipeline(tmp_path, ti2v_dir):
    report = render(tmp_path, [f"model.path={ti2v_dir}", *COMMON])
    assert report["blocks"] == 1 and report["latent_frames"] == 3 and report["frames_written"] == 9
    ours = load_latents(tmp_path)
    theirs = _oracle(ti2v_dir, None)
    assert ours.shape == theirs.shape == (1, 48, 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_image_to_video_equals_wan_i2v_pipeline(tmp_path, ti2v_dir, image_file):
    report = render(tmp_path / "i2v", [f"model.path={ti2v_dir}", f"image={image_file}", *COMMON])
    assert report["frames_written"] == 9
    ours = load_latents(tmp_path / "i2v")
    theirs = _oracle(ti2v_dir, image_file)
    assert ours.shape == theirs.shape == (1, 48, 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-4
    render(tmp_path / "t2v", [f"model.path={ti2v_dir}", *COMMON, "output.video=false"])
    t2v = load_latents(tmp_path / "t2v")
    assert (ours[:, :, 1:] - t2v[:, :, 1:]).abs().max().item() > 1e-2, "the image conditions the later frames"


def _prepare(overrides: list[str]):
    from dualpar.api import prepare

    return prepare(compose(overrides))


@pytest.mark.parametrize("case", ["missing", "not-an-image", "model-without-image-input"])
def test_image_is_validated_before_weights(tmp_path, ti2v_dir, image_file, case, monkeypatch):
    import dualpar.models.loader as loader

    monkeypatch.setattr(loader, "read_owned_tensors", lambda *a, **k: pytest.fail("weights were loaded"))
    model, image = f"model.path={ti2v_dir}", str(image_file)
    if case == "missing":
        image = str(tmp_path / "nope.png")
    elif case == "not-an-image":
        image = str(tmp_path / "text.png")
        Path(image).write_text("not a png")
    else:
        model = "model=tiny"
    with pytest.raises(ConfigError) as err:
        _prepare([model, f"image={image}", f"output.dir={tmp_path / 'out'}"])
    assert err.value.key == "image"
    assert not (tmp_path / "out").exists()


def test_image_refusal_exits_2_through_the_cli(tmp_path, capsys):
    from dualpar.cli import run

    assert run(compose(["model=tiny", f"image={tmp_path / 'nope.png'}", f"output.dir={tmp_path / 'o'}"])) == 2
    assert "image" in capsys.readouterr().err


@pytest.mark.timeout(600)
def test_image_run_resumes_to_the_uninterrupted_latents(tmp_path, ti2v_dir, image_file, monkeypatch):
    """A crash after a checkpoint and `resume=true` give the uninterrupted run's latents: the first-frame latent
    is encoded from the image file again on the resume (it is not checkpointed)."""
    from dualpar.checkpoint import FaultInjector
    from dualpar.testing.crash import SimulatedCrash

    multi = [f"model.path={ti2v_dir}", f"image={image_file}", *COMMON, "frames=33", "schedule.block_latents=2"]
    multi += ["schedule.context_latents=1", "output.video=false"]
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
