"""A Wan2.1 I2V-like random-weight directory (`WanImageToVideoPipeline`): a tiny CLIP image encoder, a
transformer with image tokens (`image_dim`, `added_kv_proj_dim`) and 36 input channels (16 noise + 4 mask +
16 condition latents), written with `save_pretrained`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from dualpar.models.loader import build_full_transformer, builtin_text_parts, builtin_vae, load_scheduler
from dualpar.models.registry import builtin_info

CLIP_DIM = 32
TEXT_LEN = 512  # WanAttnProcessor splits the image tokens off as everything before the last 512


def build_tiny_i2v_pipeline(init_seed: int = 0):
    """diffusers' WanImageToVideoPipeline of tiny Wan2.1-I2V-like components (also the oracle in tests)."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    base = builtin_info("tiny", init_seed)
    hidden = int(base.transformer["num_attention_heads"]) * int(base.transformer["attention_head_dim"])
    transformer = {**base.transformer, "in_channels": 36, "image_dim": CLIP_DIM, "added_kv_proj_dim": hidden}
    info = dataclasses.replace(base, transformer=transformer)
    tokenizer, text_encoder = builtin_text_parts(info)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed + 3)
        clip = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=CLIP_DIM,
                intermediate_size=48,
                num_hidden_layers=3,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
            )
        ).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=builtin_vae(info),
        scheduler=load_scheduler(info, None),
        image_processor=processor,
        image_encoder=clip,
        transformer=build_full_transformer(info),
    )


def write_tiny_i2v_checkpoint(path: Path, init_seed: int = 0) -> Path:
    """Save the tiny I2V pipeline as a diffusers directory plus dualpar.json (its defaults, 512 text tokens)."""
    pipe = build_tiny_i2v_pipeline(init_seed)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    extra = dict(builtin_info("tiny", init_seed).defaults, max_sequence_length=TEXT_LEN)
    (path / "dualpar.json").write_text(json.dumps(extra, indent=2))
    return path
