"""Wan blocks split into residual stages, and the zero-initialised bidirectional audio-video fusion between them.

The `av` job interleaves two towers inside each layer (AUDIO_VIDEO.md section 3): video self, audio self, video
text, audio text, fusion, video FFN, audio FFN. To do that without touching diffusers, a `WanTransformerBlock`
is split into its three residual stages with the same ops, order and dtypes as its `forward` (a test checks
`torch.equal`). The fusion's output projections start at zero, so at init the video path is bit-identical to
the video-only job; `strength_B` (per batch row) switches fusion off for the sync-guidance row.

Legend: B batch, Sv video tokens ((P+C)*tpf), Sa audio tokens (slots), T text tokens, Dv/Da widths, E = H*D.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from diffusers.models.normalization import FP32LayerNorm
from torch import nn

from dualpar.av.cache import CacheContext, CachedSelfAttnProcessor, FeatureCache, attend, extend_kv
from dualpar.av.rope import TimeRope


@dataclass(frozen=True)
class Modulation:
    """The six adaLN tensors of one Wan block for one window (shift/scale/gate of attention and FFN)."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor
    c_shift: torch.Tensor
    c_scale: torch.Tensor
    c_gate: torch.Tensor


def modulation(block: nn.Module, temb: torch.Tensor) -> Modulation:
    """`WanTransformerBlock.forward`'s modulation from its timestep projection ([B, 6, D] or [B, S, 6, D])."""
    if temb.ndim == 4:
        parts = (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)
        return Modulation(*(p.squeeze(2) for p in parts))
    return Modulation(*(block.scale_shift_table + temb.float()).chunk(6, dim=1))


def self_attention_stage(block: nn.Module, x: torch.Tensor, mod: Modulation, rotary_emb) -> torch.Tensor:
    """Residual stage 1: modulated self-attention (through whatever processor `block.attn1` has)."""
    norm_x = (block.norm1(x.float()) * (1 + mod.scale) + mod.shift).type_as(x)
    attn_out = block.attn1(norm_x, None, None, rotary_emb)
    return (x.float() + attn_out * mod.gate).type_as(x)


def text_attention_stage(block: nn.Module, x: torch.Tensor, text_BTD: torch.Tensor) -> torch.Tensor:
    """Residual stage 2: cross-attention to the (projected) text embeddings."""
    norm_x = block.norm2(x.float()).type_as(x)
    return x + block.attn2(norm_x, text_BTD, None, None)


def ffn_stage(block: nn.Module, x: torch.Tensor, mod: Modulation) -> torch.Tensor:
    """Residual stage 3: modulated feed-forward."""
    norm_x = (block.norm3(x.float()) * (1 + mod.c_scale) + mod.c_shift).type_as(x)
    ff = block.ffn(norm_x)
    return (x.float() + ff.float() * mod.c_gate).type_as(x)


def split_block_forward(block: nn.Module, x: torch.Tensor, text_BTD: torch.Tensor, temb: torch.Tensor,
                        rotary_emb) -> torch.Tensor:
    """The three stages composed: equals `block(x, text_BTD, temb, rotary_emb)` bit for bit."""
    mod = modulation(block, temb)
    x = self_attention_stage(block, x, mod, rotary_emb)
    x = text_attention_stage(block, x, text_BTD)
    return ffn_stage(block, x, mod)


class TimeCrossAttention(nn.Module):
    """Queries of one modality attend to keys of the other, both rotated on the shared time clock.

    Q/K RMSNorm across heads (as Wan); raw K/V can be extended by the feature cache (`CacheContext`)."""

    def __init__(self, q_dim: int, kv_dim: int, heads: int, head_dim: int, eps: float = 1e-6):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(q_dim, inner), nn.Linear(kv_dim, inner), nn.Linear(kv_dim, inner)
        self.norm_q, self.norm_k = nn.RMSNorm(inner, eps=eps), nn.RMSNorm(inner, eps=eps)
        self.out = nn.Linear(inner, q_dim)

    def forward(self, xq_BQD: torch.Tensor, xkv_BKD: torch.Tensor, rope_q: TimeRope, rope_kv: TimeRope,
                ctx: CacheContext | None = None) -> torch.Tensor:
        q = self.to_q(xq_BQD)
        k, v, valid = extend_kv(ctx, self.to_k(xkv_BKD), self.to_v(xkv_BKD))
        q, k = self.norm_q(q), self.norm_k(k)
        q, k, v = (t.unflatten(2, (self.heads, -1)) for t in (q, k, v))
        out = attend(rope_q(q), rope_kv(k), v, valid).flatten(2, 3).type_as(q)
        return self.out(out)


class AVFusion(nn.Module):
    """Bidirectional audio<->video attention with zero-initialised output projections (AUDIO_VIDEO.md 3)."""

    def __init__(self, dim_v: int, dim_a: int, heads: int, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm_v, self.norm_a = FP32LayerNorm(dim_v, eps), FP32LayerNorm(dim_a, eps)
        self.a2v = TimeCrossAttention(dim_v, dim_a, heads, head_dim, eps)
        self.v2a = TimeCrossAttention(dim_a, dim_v, heads, head_dim, eps)
        for attn in (self.a2v, self.v2a):  # both towers unchanged at init
            nn.init.zeros_(attn.out.weight)
            nn.init.zeros_(attn.out.bias)

    def forward(self, x_v: torch.Tensor, x_a: torch.Tensor, rope_v: TimeRope, rope_a: TimeRope,
                strength_B: torch.Tensor | None = None, ctx_a2v: CacheContext | None = None,
                ctx_v2a: CacheContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n_v, n_a = self.norm_v(x_v), self.norm_a(x_a)  # both directions read the pre-fusion states
        d_v = self.a2v(n_v, n_a, rope_v, rope_a, ctx_a2v)
        d_a = self.v2a(n_a, n_v, rope_a, rope_v, ctx_v2a)
        if strength_B is not None:
            g = strength_B.to(d_v.device)[:, None, None]
            d_v, d_a = g.to(d_v.dtype) * d_v, g.to(d_a.dtype) * d_a
        return x_v + d_v.to(x_v.dtype), x_a + d_a.to(x_a.dtype)


@dataclass(frozen=True)
class AVLayerInputs:
    """Everything a window's layers share: projected text, timestep projections and the RoPE tables.

    text_v/text_a: each tower's projected text [B, T, D]; tproj_v/tproj_a: timestep projections [B, 6, D].
    time_v: temporal-only table of the video latent frames (window then cached), repeat = tokens per frame.
    time_a: audio tokens (window slots then cached), for audio self-attention and both fusion directions.
    rope_v: what video self-attention receives as `rotary_emb` (Wan's 3-D tables; None when the video
    processor takes its tables from its own pass context). strength_B: fusion strength per row (None: 1).
    audio_valid_S: bool [slots] real window audio tokens (padded mode), None when aligned."""

    text_v: torch.Tensor
    text_a: torch.Tensor
    tproj_v: torch.Tensor
    tproj_a: torch.Tensor
    time_v: TimeRope
    time_a: TimeRope
    rope_v: tuple[torch.Tensor, torch.Tensor] | None = None
    strength_B: torch.Tensor | None = None
    audio_valid_S: torch.Tensor | None = None

    @cached_property
    def rope_a(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.time_a.wan_tables()


@dataclass(frozen=True)
class AVPassCache:
    """This pass's use of the stage's feature cache: read the right neighbour's entries (`use`, i.e. the
    plan's has_right) and store the window's tokens `store_v`/`store_a` (`AVWindow.*_store_tokens`)."""

    cache: FeatureCache
    store_v: slice | None
    store_a: slice | None
    use: bool = True
    tag: str = ""

    def context(self, layer: int, kind: str, store: slice | None, valid: torch.Tensor | None) -> CacheContext:
        return CacheContext(self.cache, layer, kind, store, valid, self.tag, self.use)


def av_layer(layer: int, video_block: nn.Module, audio_block: nn.Module, fusion: AVFusion | None,
             x_v: torch.Tensor, x_a: torch.Tensor, inp: AVLayerInputs, pc: AVPassCache | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer of both towers: video self, audio self, video text, audio text, fusion, video FFN, audio FFN."""
    mod_v, mod_a = modulation(video_block, inp.tproj_v), modulation(audio_block, inp.tproj_a)
    x_v = self_attention_stage(video_block, x_v, mod_v, inp.rope_v)
    proc = audio_block.attn1.processor
    if pc is not None and not isinstance(proc, CachedSelfAttnProcessor):
        raise ValueError("the audio block's attn1 needs a CachedSelfAttnProcessor to use the feature cache")
    if pc is not None:
        proc.context = pc.context(layer, "audio_self", pc.store_a, inp.audio_valid_S)
    try:
        x_a = self_attention_stage(audio_block, x_a, mod_a, inp.rope_a)
    finally:
        if pc is not None:
            proc.context = None
    x_v = text_attention_stage(video_block, x_v, inp.text_v)
    x_a = text_attention_stage(audio_block, x_a, inp.text_a)
    if fusion is not None:
        ctx_a2v = pc.context(layer, "a2v", pc.store_a, inp.audio_valid_S) if pc else None
        ctx_v2a = pc.context(layer, "v2a", pc.store_v, None) if pc else None
        x_v, x_a = fusion(x_v, x_a, inp.time_v, inp.time_a, inp.strength_B, ctx_a2v, ctx_v2a)
    return ffn_stage(video_block, x_v, mod_v), ffn_stage(audio_block, x_a, mod_a)


def run_av_layers(layer_ids: Sequence[int], video_blocks: Sequence[nn.Module], audio_blocks: Sequence[nn.Module],
                  fusions: Sequence[AVFusion | None], x_v: torch.Tensor, x_a: torch.Tensor,
                  inp: AVLayerInputs, pc: AVPassCache | None = None, check_finite: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A stage's layers (global ids `layer_ids`, blocks given in the same order) for one window.

    A non-finite audio state would reach the video through fusion even at zero init (0 * nan = nan), so the
    audio input is checked once per call (one device sync; `check_finite=False` skips it)."""
    if not len(layer_ids) == len(video_blocks) == len(audio_blocks) == len(fusions):
        raise ValueError("layer_ids, video_blocks, audio_blocks and fusions must have the same length")
    if check_finite and any(f is not None for f in fusions) and not bool(torch.isfinite(x_a).all()):
        raise ValueError("non-finite audio hidden states would break the video path through fusion")
    for layer, vb, ab, fu in zip(layer_ids, video_blocks, audio_blocks, fusions):
        x_v, x_a = av_layer(layer, vb, ab, fu, x_v, x_a, inp, pc)
    return x_v, x_a
