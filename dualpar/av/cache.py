"""The audio side of the feature cache, and the attention processor that reads and fills it.

DualParal gives block k's self-attention the right context of block k+1 through a per-stage feature cache:
the raw K/V (after the projection, before K-norm and RoPE) of the first C own latent frames of the block the
stage processed just before. The `av` job extends that cache to the audio self-attention and to both fusion
directions (AUDIO_VIDEO.md section 3). Because diffusers' Wan block passes no extra arguments to its attention
processors, the per-call instructions (`CacheContext`) live on the processor object and are set by the layer
runner just before the call.

Legend: B batch, S tokens (Sq queries, Sk keys), H heads, D head dim, E = H*D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dualpar.models.rope import apply_rope


@dataclass(frozen=True)
class KVEntry:
    """Raw keys/values of the tokens one pass stored; `valid_S` marks real tokens (None: all real)."""

    k_BSE: torch.Tensor
    v_BSE: torch.Tensor
    valid_S: torch.Tensor | None = None


class FeatureCache:
    """One stage's cache: an entry per (layer, kind, tag); reset at every iteration start.

    kind: "audio_self", "a2v" (audio K/V read by video queries) or "v2a" (video K/V read by audio queries).
    tag separates micro-batches (e.g. "cond"/"uncond" when guidance rows travel separately)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str, str], KVEntry] = {}

    def reset(self) -> None:
        self._entries.clear()

    def get(self, layer: int, kind: str, tag: str = "") -> KVEntry | None:
        return self._entries.get((layer, kind, tag))

    def put(self, layer: int, kind: str, entry: KVEntry, tag: str = "") -> None:
        self._entries[(layer, kind, tag)] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def nbytes(self) -> int:
        return sum(e.k_BSE.nbytes + e.v_BSE.nbytes for e in self._entries.values())


@dataclass(frozen=True)
class CacheContext:
    """What one attention call does with the cache: append the stored entry to its keys (when `use`: the
    pass has a right neighbour), then store `store` (a slice of its own key tokens) for the next pass.
    `valid_S` marks its own real key tokens (padded mode)."""

    cache: FeatureCache
    layer: int
    kind: str
    store: slice | None = None
    valid_S: torch.Tensor | None = None
    tag: str = ""
    use: bool = True


def extend_kv(
    ctx: CacheContext | None, k_BSE: torch.Tensor, v_BSE: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keys/values of this call followed by the cached ones, their validity mask, and the cache refilled."""
    if ctx is None:
        return k_BSE, v_BSE, None
    entry = ctx.cache.get(ctx.layer, ctx.kind, ctx.tag) if ctx.use else None
    own_valid = ctx.valid_S
    if ctx.store is not None:
        kept = None if own_valid is None else own_valid[ctx.store].clone()
        new = KVEntry(k_BSE[:, ctx.store].clone(), v_BSE[:, ctx.store].clone(), kept)
        ctx.cache.put(ctx.layer, ctx.kind, new, ctx.tag)
    if entry is None:
        return k_BSE, v_BSE, own_valid
    valid = None
    if own_valid is not None or entry.valid_S is not None:
        own = own_valid if own_valid is not None else torch.ones(k_BSE.shape[1], dtype=torch.bool)
        old = entry.valid_S if entry.valid_S is not None else torch.ones(entry.k_BSE.shape[1], dtype=torch.bool)
        valid = torch.cat([own.cpu(), old.cpu()])
    k = torch.cat([k_BSE, entry.k_BSE.to(k_BSE.dtype)], dim=1)
    v = torch.cat([v_BSE, entry.v_BSE.to(v_BSE.dtype)], dim=1)
    return k, v, valid


def attend(
    q_BSHD: torch.Tensor, k_BSHD: torch.Tensor, v_BSHD: torch.Tensor, valid_S: torch.Tensor | None
) -> torch.Tensor:
    """SDPA in [B, S, H, D] layout (as diffusers' native backend calls it); invalid keys are masked."""
    mask = None
    if valid_S is not None:
        mask = valid_S.to(q_BSHD.device)[None, None, None, :]
    out = F.scaled_dot_product_attention(
        q_BSHD.permute(0, 2, 1, 3),
        k_BSHD.permute(0, 2, 1, 3),
        v_BSHD.permute(0, 2, 1, 3),
        attn_mask=mask,
        dropout_p=0.0,
        is_causal=False,
    )
    return out.permute(0, 2, 1, 3)


class CachedSelfAttnProcessor:
    """Wan self-attention (same arithmetic as `WanAttnProcessor`) with keys extended by the feature cache.

    `rotary_emb` may cover more positions than there are queries: queries take the first Sq rows, keys the
    first Sk (window, or window plus cached tokens, whose positions continue the window's). With `context`
    None it is plain self-attention."""

    def __init__(self) -> None:
        self.context: CacheContext | None = None

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("CachedSelfAttnProcessor is for self-attention without a mask")
        if getattr(attn, "fused_projections", False):
            raise ValueError("fused QKV projections are not supported by the cached processor")
        x_BSE = hidden_states
        q, k, v = attn.to_q(x_BSE), attn.to_k(x_BSE), attn.to_v(x_BSE)
        k, v, valid = extend_kv(self.context, k, v)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))
        if rotary_emb is not None:
            cos, sin = rotary_emb[0][0, :, 0], rotary_emb[1][0, :, 0]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attend(q, k, v, valid).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))
