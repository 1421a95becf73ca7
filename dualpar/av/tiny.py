"""Tiny random configurations for CPU tests of the `av` job (AUDIO_VIDEO.md section 9).

Video dim 64 with 2 heads of head_dim 32 (temporal RoPE needs head_dim >= 32 to avoid aliasing), 2 layers;
the audio tower is its isomorphic twin. Shared by the unit tests and usable by integration tests.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_WAN: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 4,
    "out_channels": 4, "text_dim": 32, "freq_dim": 32, "ffn_dim": 128, "num_layers": 2,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 64,
}


def tiny_wan(seed: int = 0, **overrides: Any):
    """A randomly initialised diffusers `WanTransformer3DModel` with the tiny config (float32, eval)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**{**TINY_WAN, **overrides}).eval()


def tiny_audio_tower(seed: int = 1, latent_channels: int = 16, width_ratio: float = 1.0, fusion_every: int = 1,
                     wan_config: dict[str, Any] | None = None):
    """An audio tower isomorphic to `tiny_wan` (random weights, zero fusion projections)."""
    from dualpar.av.branch import AudioBranchConfig, AudioTower

    torch.manual_seed(seed)
    cfg = AudioBranchConfig.from_wan(wan_config or TINY_WAN, latent_channels, width_ratio, fusion_every)
    return AudioTower(cfg).eval()
