"""Random-weight model presets of the real diffusers classes, small enough for a 2-core CPU.

Weights are a pure function of (init_seed, parameter name): each tensor is drawn from its own generator,
so a pipeline stage can materialise only its own layers and still get exactly the weights every other
process (and a `save_pretrained` directory written by `tools/make_tiny_checkpoint.py`) has.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

TINY_TRANSFORMER = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 48,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 64,
}

SMALL_TRANSFORMER = {
    **TINY_TRANSFORMER,
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "ffn_dim": 512,
    "num_layers": 8,
    "text_dim": 64,
    "freq_dim": 64,
}

TINY_VAE = {
    "base_dim": 8,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}

TINY_SCHEDULER = {
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "num_train_timesteps": 1000,
    "flow_shift": 3.0,
}


def tiny_text_encoder_config(d_model: int) -> dict:
    return {
        "vocab_size": 384,
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 2 * d_model,
        "num_layers": 2,
        "num_heads": 2,
        "relative_attention_num_buckets": 8,
        "dropout_rate": 0.0,
    }


def _param_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator("cpu").manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def init_tensor(seed: int, name: str, shape: torch.Size) -> torch.Tensor:
    """The value of parameter `name`: norms/scales near 1, biases 0, other weights N(0, 0.02)-ish."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return torch.zeros(shape)
    gen = _param_generator(seed, name)
    if "norm" in name and leaf == "weight" and len(shape) == 1:
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if leaf == "scale_shift_table":
        return torch.randn(shape, generator=gen) / shape[-1] ** 0.5
    fan_in = shape[1:].numel() if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=gen) / max(fan_in, 1) ** 0.5


def materialise_random(module: nn.Module, seed: int, prefix: str = "") -> None:
    """Give every parameter of `module` (possibly on the meta device) its seeded value, in place."""
    for name, param in list(module.named_parameters()):
        full = prefix + name
        value = init_tensor(seed, full, param.shape).to(torch.float32)
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        setattr(owner, name.rsplit(".", 1)[-1], nn.Parameter(value, requires_grad=False))
