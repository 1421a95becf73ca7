"""A multi-block reference that shares no code with the engine: docs/algorithm.md written out literally.

`tests/unit/test_pipeline_oracle.py` checks one block with C = 0 against diffusers' WanPipeline, and the
stage-equality tests compare the engine with itself. Here the whole block queue (n = 3 blocks, C = 1, both
left-context modes) is computed by a plain loop over the whole latent tensor, with the diffusers Wan
transformer called through its own modules and diffusers' own `WanAttnProcessor`, subclassed only to append
the cached right-context keys/values, and compared with the engine's latents.

Only the checkpoint directory is written by dualpar (`write_tiny_checkpoint`, then read back with diffusers'
`WanPipeline.from_pretrained`) and the engine is run through `render` for the comparison; the reference itself
calls no dualpar code.

Tolerance: 1e-4 absolute on latents of unit scale. The reference runs the same float32 arithmetic in a
different association (its queries are padded to the key length so that diffusers' processor applies one
RoPE table to both; attention kernels chosen by shape), so only float rounding may differ.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from diffusers import WanPipeline
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from torch import nn

from dualpar.testing.jobs import load_latents, render
from dualpar.testing.tiny_checkpoint import write_tiny_checkpoint

PROMPT, NEGATIVE, SEED, GUIDANCE = "a red ball bounces", "blurry", 7, 5.0
P, C, T, N_BLOCKS = 2, 1, 3, 3  # block latents, context latents, steps, blocks
HEIGHT = WIDTH = 64
TOLERANCE = 1e-4


class _Appending(nn.Module):
    """A projection whose output gets `extra` rows appended along the token axis (and whose rows `capture`
    of the un-appended output are remembered)."""

    def __init__(self, proj: nn.Module, extra: torch.Tensor | None, capture: slice | None):
        super().__init__()
        self.proj, self.extra, self.capture, self.captured = proj, extra, capture, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(x)
        if self.capture is not None:
            self.captured = out[:, self.capture].clone()
        return out if self.extra is None else torch.cat([out, self.extra], dim=1)


class CachedKVProcessor(WanAttnProcessor):
    """diffusers' WanAttnProcessor, with raw (pre-norm, pre-RoPE) cached K/V appended to the keys.

    diffusers applies one RoPE table to queries and keys, so the queries are padded with zero rows to the key
    length and the padded rows' outputs dropped: every real query row attends exactly as in the processor,
    with the keys at window-local positions 0 .. S+K_cached-1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.append: tuple[torch.Tensor, torch.Tensor] | None = None  # raw K, V [B, K_cached, D]
        self.capture: slice | None = None  # token rows whose raw K/V this pass leaves behind
        self.captured: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        s = hidden_states.shape[1]
        extra = 0 if self.append is None else self.append[0].shape[1]
        to_q, to_k, to_v = attn.to_q, attn.to_k, attn.to_v
        pad_q = None if extra == 0 else hidden_states.new_zeros(hidden_states.shape[0], extra, attn.inner_dim)
        attn.to_q = _Appending(to_q, pad_q, None)
        attn.to_k = _Appending(to_k, None if extra == 0 else self.append[0], self.capture)
        attn.to_v = _Appending(to_v, None if extra == 0 else self.append[1], self.capture)
        try:
            cos, sin = rotary_emb
            out = super().__call__(attn, hidden_states, None, None, (cos[:, : s + extra], sin[:, : s + extra]))
            if self.capture is not None:
                self.captured = (attn.to_k.captured, attn.to_v.captured)
        finally:
            attn.to_q, attn.to_k, attn.to_v = to_q, to_k, to_v
        return out[:, :s]


def transformer_pass(model, window, timestep, text, processors, append, capture):
    """WanTransformer3DModel.forward through its own modules, for one window and with the feature cache:
    `append[l]` is layer l's cached raw K/V (or None), `capture` the token rows to keep. Returns the new
    cache (one (K, V) per layer, or None)."""
    b = text.shape[0]
    _, _, f, h, w = window.shape
    p_t, p_h, p_w = model.config.patch_size
    extra_frames = 0 if append[0] is None else C
    # window-local RoPE positions 0 .. f + C - 1 (the cached frames follow the window)
    rope = model.rope(window.new_empty(1, 1, f + extra_frames, h, w))
    hidden = model.patch_embedding(window).flatten(2).transpose(1, 2).contiguous().expand(b, -1, -1)
    temb, proj, text_proj, _ = model.condition_embedder(timestep.expand(b), text, None, timestep_seq_len=None)
    proj = proj.unflatten(1, (6, -1))
    for layer, block in enumerate(model.blocks):
        processors[layer].append, processors[layer].capture = append[layer], capture
        hidden = block(hidden, text_proj, proj, rope)
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    hidden = (model.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
    hidden = model.proj_out(hidden).reshape(b, f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
    out = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
    new_cache = [p.captured for p in processors] if capture is not None else None
    return out, new_cache


def reference_latents(
    pipe: WanPipeline, left_context: str, max_sequence_length: int, feature_cache: bool = True
) -> torch.Tensor:
    """docs/algorithm.md, "The block queue" and "Coordinated noise", on the whole latent tensor
    (`feature_cache=False`: the control that shows the cache matters)."""
    model = pipe.transformer
    processors = [CachedKVProcessor() for _ in model.blocks]
    for block, proc in zip(model.blocks, processors):
        block.attn1.set_processor(proc)
    cond, uncond = pipe.encode_prompt(
        PROMPT, NEGATIVE, do_classifier_free_guidance=True, max_sequence_length=max_sequence_length
    )
    text = torch.cat([cond, uncond])
    z, h, w = model.config.in_channels, HEIGHT // 8, WIDTH // 8
    tpf = (h // model.config.patch_size[1]) * (w // model.config.patch_size[2])  # tokens per latent frame
    template = copy.deepcopy(pipe.scheduler)
    template.set_timesteps(T)
    timesteps = template.timesteps

    def own(k: int) -> slice:  # block 0 owns [0, P+C); block k >= 1 owns [kP+C, (k+1)P+C)
        return slice(0, P + C) if k == 0 else slice(k * P + C, (k + 1) * P + C)

    latents = torch.zeros(1, z, N_BLOCKS * P + C, h, w)
    versions: dict[tuple[int, int], torch.Tensor] = {}  # (block, updates) -> its own latents
    solvers: dict[int, object] = {}
    generator = torch.Generator("cpu").manual_seed(SEED)
    pool = torch.randn((1, z, P + C, h, w), generator=generator)
    for i in range(T + N_BLOCKS):
        if i < N_BLOCKS:  # block i joins with fresh noise
            if i > 0:
                perm = torch.randperm(P, generator=generator)
                pool = torch.cat([pool[:, :, P:], pool[:, :, :P][:, :, perm]], dim=2)
            latents[:, :, own(i)] = pool if i == 0 else pool[:, :, -P:]
            versions[(i, 0)] = latents[:, :, own(i)].clone()
            solvers[i] = copy.deepcopy(template)
        active = [k for k in range(N_BLOCKS - 1, -1, -1) if 0 <= i - k < T]  # tail first, head last
        cache = [None] * len(model.blocks)  # empty at the start of every iteration
        for k in active:
            s = i - k
            if k == 0:
                window = latents[:, :, own(0)]
            else:
                left = versions[(k - 1, s + 1 if left_context == "ahead" else s)][:, :, -C:]
                window = torch.cat([left, latents[:, :, own(k)]], dim=2)
            offset = 0 if k == 0 else C  # where the own frames start in the window
            capture = slice(offset * tpf, (offset + C) * tpf)
            append = (
                cache if feature_cache and k + 1 in active else [None] * len(model.blocks)
            )  # the tail has no right context
            with torch.no_grad():
                out, cache = transformer_pass(model, window, timesteps[s], text, processors, append, capture)
            guided = out[1:2] + GUIDANCE * (out[0:1] - out[1:2])
            velocity = guided[:, :, offset:].float()
            sample = latents[:, :, own(k)].clone()  # the solver keeps it: not a view of the whole tensor
            new = solvers[k].step(velocity, timesteps[s], sample, return_dict=False)[0]
            latents[:, :, own(k)] = new
            versions[(k, s + 1)] = new.clone()
    return latents


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("reference") / "ckpt")


@pytest.mark.parametrize("left_context", ["ahead", "same"])
def test_engine_equals_literal_reference(tmp_path, tiny_dir, left_context):
    frames = 4 * (N_BLOCKS * P + C - 1) + 1
    report = render(
        tmp_path,
        [
            f"model.path={tiny_dir}",
            f"prompt='{PROMPT}'",
            f"negative_prompt='{NEGATIVE}'",
            f"seed={SEED}",
            f"frames={frames}",
            f"height={HEIGHT}",
            f"width={WIDTH}",
            f"schedule.block_latents={P}",
            f"schedule.context_latents={C}",
            f"schedule.steps={T}",
            f"schedule.guidance={GUIDANCE}",
            f"schedule.left_context={left_context}",
            "output.video=false",
            "output.latents=true",
        ],
    )
    assert report["blocks"] == N_BLOCKS
    ours = load_latents(tmp_path)
    max_len = json.loads((tiny_dir / "dualpar.json").read_text())["max_sequence_length"]
    pipe = WanPipeline.from_pretrained(tiny_dir)
    theirs = reference_latents(pipe, left_context, max_len)
    assert ours.shape == theirs.shape == (1, 16, N_BLOCKS * P + C, HEIGHT // 8, WIDTH // 8)
    assert (ours - theirs).abs().max().item() < TOLERANCE
    # The feature cache is really exercised: the reference without it is far from the engine.
    no_cache = reference_latents(pipe, left_context, max_len, feature_cache=False)
    assert (ours - no_cache).abs().max().item() > 1e-3
