"""A SkyReels-V2 diffusion-forcing random-weight directory (`SkyReelsV2DiffusionForcingPipeline` with a tiny
`SkyReelsV2Transformer3DModel`, the tiny preset's UMT5, tokenizer, Wan VAE and scheduler), written with
`save_pretrained`: loading it through `model.path` is exactly the code path of a user's SkyReels-V2 DF
checkpoint, and the pipeline itself is the oracle in tests (weights cannot be downloaded here)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dualpar.models import tiny
from dualpar.models.loader import builtin_text_parts, builtin_vae, load_scheduler
from dualpar.models.registry import builtin_info

TINY_SKYREELS_TRANSFORMER = {**tiny.TINY_TRANSFORMER, "inject_sample_info": True, "num_frame_per_block": 1}


def build_tiny_skyreels_pipeline(init_seed: int = 0):
    """diffusers' SkyReelsV2DiffusionForcingPipeline of tiny components; the transformer's weights are drawn per
    tensor from `init_seed + 3000` (`tiny.init_tensor`), so they differ from the Wan preset's."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Transformer3DModel

    info = builtin_info("tiny", init_seed)
    tokenizer, text_encoder = builtin_text_parts(info)
    transformer = SkyReelsV2Transformer3DModel.from_config(TINY_SKYREELS_TRANSFORMER)
    state = {k: tiny.init_tensor(init_seed + 3000, k, p.shape) for k, p in transformer.named_parameters()}
    transformer.load_state_dict(state)
    return SkyReelsV2DiffusionForcingPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer.eval().requires_grad_(False),
        vae=builtin_vae(info),
        scheduler=load_scheduler(info, None),
    )


def write_tiny_skyreels_checkpoint(path: Path, init_seed: int = 0) -> Path:
    """Save the tiny SkyReels-V2 DF pipeline as a diffusers directory plus dualpar.json (the tiny defaults, but
    SkyReels' own default frame rate, 24 fps, from the registry)."""
    pipe = build_tiny_skyreels_pipeline(init_seed)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    info = builtin_info("tiny", init_seed)
    defaults = {k: v for k, v in info.defaults.items() if k != "fps"}
    extra = dict(defaults, max_sequence_length=info.max_sequence_length)
    (path / "dualpar.json").write_text(json.dumps(extra, indent=2))
    return path


def reference_noise(seed: int, frames: int, h: int, w: int) -> torch.Tensor:
    """The pipeline's initial latents for `seed` (randn_tensor on a CPU generator): block 0's noise pool."""
    return torch.randn((1, 16, frames, h, w), generator=torch.Generator("cpu").manual_seed(seed))
