"""A Wan2.2 TI2V-5B-like random-weight directory: 48 latent channels, a residual VAE with patch size 2
(4x16x16 compression) and `expand_timesteps` in model_index.json, written with `save_pretrained`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from dualpar.models.loader import build_full_transformer, builtin_text_parts, load_scheduler
from dualpar.models.registry import builtin_info

Z_DIM = 48
TINY_TI2V_VAE = {
    "base_dim": 8,
    "decoder_base_dim": 8,
    "z_dim": Z_DIM,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "latents_mean": [round(0.1 * ((i % 7) - 3), 3) for i in range(Z_DIM)],
    "latents_std": [round(0.5 + 0.1 * (i % 5), 3) for i in range(Z_DIM)],
}
TI2V_DEFAULTS = {"height": 128, "width": 128}


def build_tiny_ti2v_pipeline(init_seed: int = 0, image: bool = False):
    """diffusers' WanPipeline (or, with `image`, WanImageToVideoPipeline without an image encoder) of tiny
    TI2V-5B-like components with expand_timesteps=True: also the oracle in tests."""
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

    base = builtin_info("tiny", init_seed)
    info = dataclasses.replace(base, transformer={**base.transformer, "in_channels": Z_DIM, "out_channels": Z_DIM})
    tokenizer, text_encoder = builtin_text_parts(info)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed + 2)
        vae = AutoencoderKLWan(**TINY_TI2V_VAE).eval()
    parts = dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=build_full_transformer(info),
        vae=vae,
        scheduler=load_scheduler(info, None),
        expand_timesteps=True,
    )
    if image:
        return WanImageToVideoPipeline(**parts, image_encoder=None, image_processor=None)
    return WanPipeline(**parts)


def write_tiny_ti2v_checkpoint(path: Path, init_seed: int = 0) -> Path:
    """Save the tiny TI2V-5B-like pipeline as a diffusers directory plus dualpar.json (its defaults)."""
    pipe = build_tiny_ti2v_pipeline(init_seed)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    info = builtin_info("tiny", init_seed)
    extra = dict(info.defaults, **TI2V_DEFAULTS, max_sequence_length=info.max_sequence_length)
    (path / "dualpar.json").write_text(json.dumps(extra, indent=2))
    return path
