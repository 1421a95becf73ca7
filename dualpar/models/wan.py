"""diffusers' WanTransformer3DModel driven from outside as embed / a slice of layers / head.

A `WanStage` holds one contiguous range of DiT layers plus only the shared parts its role needs: the
condition embedder and RoPE on every stage (cheap, recomputed locally so only hidden states travel), the
patch embedding on the first stage, the output head on the last. It knows nothing about transport.

Self-attention goes through `WindowAttnProcessor`, which implements the feature cache (docs/algorithm.md): the
raw K/V (before K-norm and RoPE) of the first C own frames of the block this stage processed just before are
appended to the current block's keys, at window-local RoPE positions P+C .. P+2C-1.

Legend: B batch rows (cond, uncond), S window tokens, K key tokens, D model width, H heads, E head dim,
C_lat latent channels, F latent frames, h/w latent height/width.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.transformers.transformer_wan import (
    WanRotaryPosEmbed,
    WanTransformer3DModel,
    _get_qkv_projections,
)
from torch import nn

from dualpar.attention.base import AttentionBackend, AttnCall
from dualpar.models.adapter import PassContext
from dualpar.models.rope import apply_rope


class WindowAttnProcessor:
    """Wan self-attention with the feature cache and a pluggable attention backend.

    State lives here because diffusers' block forward passes no extra kwargs to processors.
    """

    def __init__(self, layer: int, backend: AttentionBackend):
        self.layer = layer
        self.backend = backend
        self.ctx: PassContext | None = None
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def reset_cache(self) -> None:
        self._cache.clear()

    @torch.compiler.disable  # Python state (pass context, cache dict): compiled blocks call it eagerly
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        ctx = self.ctx
        assert ctx is not None, "WindowAttnProcessor used outside a block pass"
        q_BSD, k_BSD, v_BSD = _get_qkv_projections(attn, hidden_states, None)
        cached = self._cache.get(ctx.cache_key) if ctx.use_cache else None
        if ctx.capture is not None:
            self._cache[ctx.cache_key] = (k_BSD[:, ctx.capture].clone(), v_BSD[:, ctx.capture].clone())
        if cached is not None:
            k_BSD = torch.cat([k_BSD, cached[0]], dim=1)
            v_BSD = torch.cat([v_BSD, cached[1]], dim=1)
        q_BSD = attn.norm_q(q_BSD)
        k_BSD = attn.norm_k(k_BSD)
        q_BSHE = apply_rope(q_BSD.unflatten(2, (attn.heads, -1)), ctx.rope_q[0][0, :, 0], ctx.rope_q[1][0, :, 0])
        n_keys = k_BSD.shape[1]
        k_BSHE = apply_rope(k_BSD.unflatten(2, (attn.heads, -1)), ctx.rope_k[0][0, :, 0], ctx.rope_k[1][0, :, 0])
        v_BSHE = v_BSD.unflatten(2, (attn.heads, -1))
        call = AttnCall(
            layer=self.layer,
            block=ctx.call.block,
            step=ctx.call.step,
            num_steps=ctx.call.num_steps,
            branches=ctx.call.branches,
            q_grid=ctx.call.q_grid,
            kv_grid=(n_keys // (ctx.call.q_grid[1] * ctx.call.q_grid[2]), *ctx.call.q_grid[1:]),
            seed=ctx.call.seed,
        )
        out_BHSE = self.backend(q_BSHE.transpose(1, 2), k_BSHE.transpose(1, 2), v_BSHE.transpose(1, 2), call)
        out_BSD = out_BHSE.transpose(1, 2).flatten(2, 3).type_as(q_BSD)
        out_BSD = attn.to_out[0](out_BSD)
        return attn.to_out[1](out_BSD)


class WanStage(nn.Module):
    """One contiguous slice of a Wan DiT's layers plus the shared parts its pipeline role needs."""

    model_class: type[nn.Module] = WanTransformer3DModel  # the diffusers model built on meta and sliced
    rope_class: type[nn.Module] = WanRotaryPosEmbed

    def __init__(self, config: dict, layers: range, first: bool, last: bool):
        super().__init__()
        self.config = dict(config)
        self.layer_ids = layers
        self.first = first
        self.last = last
        with torch.device("meta"):
            full = self.model_class.from_config(config)
        self.condition_embedder = full.condition_embedder
        self.take_extra_parts(full)
        self.blocks = nn.ModuleDict({str(i): full.blocks[i] for i in layers})
        if first:
            self.patch_embedding = full.patch_embedding
        if last:
            self.norm_out = full.norm_out
            self.proj_out = full.proj_out
            self.scale_shift_table = full.scale_shift_table
        head_dim = int(config["attention_head_dim"])
        self.rope = self.rope_class(head_dim, tuple(config["patch_size"]), int(config.get("rope_max_seq_len", 1024)))
        self.processors: list[WindowAttnProcessor] = []

    def take_extra_parts(self, full: nn.Module) -> None:
        """Keep the parts a derived backbone adds to Wan's (every stage's conditioning); Wan has none."""

    def owned_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes this stage needs, matching the full model's checkpoint keys."""
        prefixes = ["condition_embedder."] + [f"blocks.{i}." for i in self.layer_ids]
        if self.first:
            prefixes.append("patch_embedding.")
        if self.last:
            prefixes += ["norm_out.", "proj_out.", "scale_shift_table"]
        return tuple(prefixes)

    def install_attention(self, make_backend) -> None:
        """Route every self-attention through a WindowAttnProcessor using `make_backend(layer)`."""
        self.processors = []
        for i in self.layer_ids:
            proc = WindowAttnProcessor(i, make_backend(i))
            self.blocks[str(i)].attn1.set_processor(proc)
            self.processors.append(proc)

    def reset_cache(self) -> None:
        for proc in self.processors:
            proc.reset_cache()

    def rope_tables(self, frames: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos/sin (fp32) for a latent grid of `frames` x h x w (window-local positions from 0)."""
        cos, sin = self.rope(torch.empty((1, 1, frames, h, w), device="meta"))
        return cos.float(), sin.float()

    def compile_blocks(self, **options) -> None:
        """`torch.compile` every transformer block of this stage in place (`model.compile=true`): the layers
        are the repeated, compute-bound part. The attention processor's Python state (pass context, cache)
        stays outside the compiled graphs through graph breaks."""
        blocks = self.layer_blocks()
        # Every block shares one forward; dynamo guards each block's own attributes (its processor's layer
        # index) and the with/without-cache shapes, so it needs a few entries per block, not torch's default 8
        # (past the limit the remaining blocks would silently run eagerly). The limit grows with every stage
        # compiled in this process: the two experts of Wan2.2 A14B share that forward too.
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = dynamo.recompile_limit + 4 * len(blocks)
        for block in blocks:
            block.compile(**options)

    def conditions(self, timestep_B: torch.Tensor, text_BLD: torch.Tensor, image_BTD: torch.Tensor | None = None):
        """(temb, timestep_proj [B, 6, D], projected text) exactly as WanTransformer3DModel.forward; per-token
        timesteps [B, S] (Wan2.2 TI2V-5B) give temb [B, S, D] and timestep_proj [B, S, 6, D]; CLIP image tokens
        (Wan2.1 I2V) are projected and put before the text, as the forward does."""
        seq = timestep_B.shape[1] if timestep_B.ndim == 2 else None
        timestep = timestep_B.flatten() if seq is not None else timestep_B
        temb, timestep_proj, text_proj, image_proj = self.condition_embedder(
            timestep, text_BLD, image_BTD, timestep_seq_len=seq
        )
        if image_proj is not None:
            text_proj = torch.concat([image_proj, text_proj], dim=1)
        return temb, timestep_proj.unflatten(2 if seq is not None else 1, (6, -1)), text_proj

    def embed(self, x_BCFHW: torch.Tensor) -> torch.Tensor:
        hidden = self.patch_embedding(x_BCFHW)
        return hidden.flatten(2).transpose(1, 2).contiguous()

    def run_layers(self, hidden_BSD, text_proj, timestep_proj, ctx: PassContext) -> torch.Tensor:
        with self.pass_context(ctx):
            for i in self.layer_ids:
                hidden_BSD = self.blocks[str(i)](hidden_BSD, text_proj, timestep_proj, None)
        return hidden_BSD

    @contextmanager
    def pass_context(self, ctx: PassContext) -> Iterator[None]:
        """Every self-attention processor sees `ctx` for the duration of one pass (also when the layers are
        driven from outside, as the `av` job does)."""
        for proc in self.processors:
            proc.ctx = ctx
        try:
            yield
        finally:
            for proc in self.processors:
                proc.ctx = None

    def layer_blocks(self) -> list[nn.Module]:
        """This stage's transformer blocks in layer order."""
        return [self.blocks[str(i)] for i in self.layer_ids]

    def head(self, hidden_BSD: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Output norm, projection and unpatchify -> [B, C_lat, F, h, w] (model dtype)."""
        table = self.scale_shift_table.to(temb.device)
        if temb.ndim == 3:  # per-token timesteps: [B, S, D] (as WanTransformer3DModel.forward)
            shift, scale = (table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (self.norm_out(hidden_BSD.float()) * (1 + scale) + shift).type_as(hidden_BSD)
        hidden = self.proj_out(hidden)
        p_t, p_h, p_w = self.config["patch_size"]
        f, h, w = grid
        b = hidden.shape[0]
        hidden = hidden.reshape(b, f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
        hidden = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)
