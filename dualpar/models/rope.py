"""The one rotary-embedding applier: diffusers' Wan `apply_rotary_emb` arithmetic for every attention.

Video self-attention (Wan's 3-D tables, one row per token) and the `av` job's audio and fusion attentions (the
temporal-only tables, one row per position shared by `repeat` tokens) rotate through this function, so the
rounding is the same everywhere: half-precision inputs are upcast exactly and computed in float32 (what type
promotion against fp32 tables does in diffusers), float64 tables are rounded to float32 first (no fp64
temporaries on GPUs), and the result is cast back to the input's dtype once. Float64 inputs stay float64.

Legend: B batch, S tokens, L positions, H heads, D head_dim.
"""

from __future__ import annotations

import torch


def apply_rope(x_BSHD: torch.Tensor, cos_LD: torch.Tensor, sin_LD: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """Rotate `x` by the interleaved cos/sin tables [L, D]: token s takes position s // `repeat` (only the first
    S // repeat rows are read, so a table may cover more positions, e.g. the keys' cached frames)."""
    b, s, h, d = x_BSHD.shape
    if s % repeat:
        raise ValueError(f"{s} tokens are not a multiple of {repeat} tokens per position")
    n = s // repeat
    if cos_LD.shape[0] < n:
        raise ValueError(f"the rotary table has {cos_LD.shape[0]} positions for {n}")
    compute = torch.promote_types(x_BSHD.dtype, torch.float32)
    cos = cos_LD[:n, None, None, 0::2].to(device=x_BSHD.device, dtype=compute)  # [n, 1, 1, D/2]
    sin = sin_LD[:n, None, None, 1::2].to(device=x_BSHD.device, dtype=compute)
    x_BNRHD = x_BSHD.to(compute).reshape(b, n, repeat, h, d)
    x1, x2 = x_BNRHD.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty(x_BNRHD.shape, dtype=compute, device=x_BSHD.device)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.view(b, s, h, d).type_as(x_BSHD)
