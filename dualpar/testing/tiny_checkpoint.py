"""Write the random-weight presets as a real diffusers Wan directory (`save_pretrained`).

Loading that directory through `model.path` exercises exactly the code path of a user's Wan checkpoint, and
must give the same weights, hence the same video, as the preset built in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from dualpar.models.loader import build_full_transformer, builtin_text_parts, builtin_vae, load_scheduler
from dualpar.models.registry import builtin_info


def build_tiny_pipeline(name: str = "tiny", init_seed: int = 0, boundary_ratio: float | None = None):
    """A diffusers WanPipeline made of the preset's components (also the oracle in tests). With
    `boundary_ratio`, a Wan2.2-A14B-style pipeline: `transformer_2` (the low-noise expert) is the preset's
    transformer drawn from `init_seed + 1000`, switched in below boundary_ratio x num_train_timesteps."""
    from diffusers import WanPipeline

    info = builtin_info(name, init_seed)
    tokenizer, text_encoder = builtin_text_parts(info)
    low_noise = None if boundary_ratio is None else build_full_transformer(builtin_info(name, init_seed + 1000))
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=build_full_transformer(info),
        vae=builtin_vae(info),
        scheduler=load_scheduler(info, None),
        transformer_2=low_noise,
        boundary_ratio=boundary_ratio,
    )


def write_tiny_checkpoint(
    path: Path, name: str = "tiny", init_seed: int = 0, boundary_ratio: float | None = None
) -> Path:
    """Save the preset as a diffusers directory, plus dualpar.json with its defaults (two experts with
    `boundary_ratio`, see build_tiny_pipeline)."""
    pipe = build_tiny_pipeline(name, init_seed, boundary_ratio)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    info = builtin_info(name, init_seed)
    extra = dict(info.defaults, max_sequence_length=info.max_sequence_length)
    (path / "dualpar.json").write_text(json.dumps(extra, indent=2))
    return path
