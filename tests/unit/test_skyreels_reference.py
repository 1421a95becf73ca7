"""SkyReels-V2 diffusion forcing against a multi-block reference that shares no code with the engine.

docs/algorithm.md ("The block queue", "Coordinated noise", "SkyReels-V2 diffusion forcing") written out
literally: the whole latent tensor, the queue as plain loops, each window's per-frame timesteps (own frames at
block k's step, the left context at the level of the version it was taken from), and diffusers'
`SkyReelsV2Transformer3DModel.forward` itself (enable_diffusion_forcing, fps) with diffusers' own
`SkyReelsV2AttnProcessor`, subclassed only to append the cached right-context keys/values (its queries padded
to the key length so that one RoPE table, extended by a hook on `model.rope`, serves both). Cond and uncond
run as two calls, as the DF pipeline does. n = 3 blocks, C = 1, both left-context modes, within 1e-4.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from diffusers import SkyReelsV2DiffusionForcingPipeline
from diffusers.models.transformers.transformer_skyreels_v2 import SkyReelsV2AttnProcessor
from torch import nn

from dualpar.testing.jobs import load_latents, render
from dualpar.testing.tiny_skyreels import write_tiny_skyreels_checkpoint

PROMPT, NEGATIVE, SEED, GUIDANCE, FPS = "a red ball bounces", "blurry", 7, 5.0, 24
P, C, T, N_BLOCKS = 2, 1, 3, 3  # block latents, context latents, steps, blocks
HEIGHT = WIDTH = 64
TOLERANCE = 1e-4


class _Appending(nn.Module):
    """A projection whose output gets `extra` rows appended on the token axis (rows `capture` remembered)."""

    def __init__(self, proj: nn.Module, extra: torch.Tensor | None, capture: slice | None):
        super().__init__()
        self.proj, self.extra, self.capture, self.captured = proj, extra, capture, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(x)
        if self.capture is not None:
            self.captured = out[:, self.capture].clone()
        return out if self.extra is None else torch.cat([out, self.extra], dim=1)


class CachedKVProcessor(SkyReelsV2AttnProcessor):
    """diffusers' SkyReelsV2AttnProcessor with raw (pre-norm, pre-RoPE) cached K/V appended to the keys; the
    queries are padded with zero rows to the key length and the padded rows' outputs dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.append: tuple[torch.Tensor, torch.Tensor] | None = None
        self.capture: slice | None = None
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
            out = super().__call__(
                attn, hidden_states, None, attention_mask, (cos[:, : s + extra], sin[:, : s + extra])
            )
            if self.capture is not None:
                self.captured = (attn.to_k.captured, attn.to_v.captured)
        finally:
            attn.to_q, attn.to_k, attn.to_v = to_q, to_k, to_v
        return out[:, :s]


def reference_latents(pipe, left_context: str, max_sequence_length: int, frame_levels_on: bool = True) -> torch.Tensor:
    """The queue on the whole latent tensor (`frame_levels_on=False`: the control that gives the left context
    block k's level instead of its own, to show the per-frame levels matter)."""
    model = pipe.transformer
    processors = [CachedKVProcessor() for _ in model.blocks]
    for block, proc in zip(model.blocks, processors):
        block.attn1.set_processor(proc)

    # the RoPE table covers the window and the cached frames after it (window-local positions)
    def longer_table(module, args, out):
        x = args[0]
        return type(module).forward(module, x.new_empty(*x.shape[:2], x.shape[2] + C, *x.shape[3:]))

    model.rope.register_forward_hook(longer_table)
    cond, uncond = pipe.encode_prompt(
        PROMPT, NEGATIVE, do_classifier_free_guidance=True, max_sequence_length=max_sequence_length
    )
    z, h, w = model.config.in_channels, HEIGHT // 8, WIDTH // 8
    tpf = (h // model.config.patch_size[1]) * (w // model.config.patch_size[2])
    template = copy.deepcopy(pipe.scheduler)
    template.set_timesteps(T)
    timesteps = template.timesteps

    def level(updates: int) -> int:  # the noise level of a block after `updates` solver steps
        return int(timesteps[updates]) if updates < T else 0

    def own(k: int) -> slice:
        return slice(0, P + C) if k == 0 else slice(k * P + C, (k + 1) * P + C)

    latents = torch.zeros(1, z, N_BLOCKS * P + C, h, w)
    versions: dict[tuple[int, int], torch.Tensor] = {}
    solvers: dict[int, object] = {}
    generator = torch.Generator("cpu").manual_seed(SEED)
    pool = torch.randn((1, z, P + C, h, w), generator=generator)
    for i in range(T + N_BLOCKS):
        if i < N_BLOCKS:
            if i > 0:
                perm = torch.randperm(P, generator=generator)
                pool = torch.cat([pool[:, :, P:], pool[:, :, :P][:, :, perm]], dim=2)
            latents[:, :, own(i)] = pool if i == 0 else pool[:, :, -P:]
            versions[(i, 0)] = latents[:, :, own(i)].clone()
            solvers[i] = copy.deepcopy(template)
        active = [k for k in range(N_BLOCKS - 1, -1, -1) if 0 <= i - k < T]
        caches = {"cond": [None] * len(model.blocks), "uncond": [None] * len(model.blocks)}
        for k in active:
            s = i - k
            frame_levels = [int(timesteps[s])] * (P + C)
            if k == 0:
                window = latents[:, :, own(0)]
            else:
                left_updates = s + 1 if left_context == "ahead" else s
                window = torch.cat([versions[(k - 1, left_updates)][:, :, -C:], latents[:, :, own(k)]], dim=2)
                if frame_levels_on:
                    frame_levels[:C] = [level(left_updates)] * C
            offset = 0 if k == 0 else C
            capture = slice(offset * tpf, (offset + C) * tpf)
            outs = []
            for name, text in (("cond", cond), ("uncond", uncond)):
                append = caches[name] if k + 1 in active else [None] * len(model.blocks)
                for layer, proc in enumerate(processors):
                    proc.append, proc.capture = append[layer], capture
                with torch.no_grad():
                    outs.append(
                        model(
                            hidden_states=window,
                            timestep=torch.tensor([frame_levels]),
                            encoder_hidden_states=text,
                            enable_diffusion_forcing=True,
                            fps=[0 if FPS == 16 else 1],
                            return_dict=False,
                        )[0]
                    )
                caches[name] = [p.captured for p in processors]
            guided = outs[1] + GUIDANCE * (outs[0] - outs[1])
            sample = latents[:, :, own(k)].clone()
            new = solvers[k].step(guided[:, :, offset:].float(), timesteps[s], sample, return_dict=False)[0]
            latents[:, :, own(k)] = new
            versions[(k, s + 1)] = new.clone()
    return latents


@pytest.fixture(scope="module")
def sky_dir(tmp_path_factory):
    return write_tiny_skyreels_checkpoint(tmp_path_factory.mktemp("skyreels-ref") / "ckpt")


@pytest.mark.parametrize("left_context", ["ahead", "same"])
def test_engine_equals_literal_skyreels_reference(tmp_path, sky_dir, left_context, monkeypatch):
    import diffusers.pipelines.skyreels_v2.pipeline_skyreels_v2_diffusion_forcing as df
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    monkeypatch.setattr(df, "prompt_clean", prompt_clean)  # SkyReels' calls ftfy unconditionally (not installed)
    report = render(
        tmp_path,
        [
            f"model.path={sky_dir}",
            f"prompt='{PROMPT}'",
            f"negative_prompt='{NEGATIVE}'",
            f"seed={SEED}",
            f"frames={4 * (N_BLOCKS * P + C - 1) + 1}",
            f"height={HEIGHT}",
            f"width={WIDTH}",
            f"schedule.block_latents={P}",
            f"schedule.context_latents={C}",
            f"schedule.steps={T}",
            f"schedule.guidance={GUIDANCE}",
            f"schedule.left_context={left_context}",
            f"output.fps={FPS}",
            "output.video=false",
            "output.latents=true",
        ],
    )
    assert report["blocks"] == N_BLOCKS
    ours = load_latents(tmp_path)
    max_len = json.loads((sky_dir / "dualpar.json").read_text())["max_sequence_length"]
    theirs = reference_latents(SkyReelsV2DiffusionForcingPipeline.from_pretrained(sky_dir), left_context, max_len)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < TOLERANCE, (ours - theirs).abs().max().item()
    if left_context == "ahead":  # the context is one step cleaner than the own frames: its level matters
        pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(sky_dir)
        flat = reference_latents(pipe, left_context, max_len, frame_levels_on=False)
        assert (ours - flat).abs().max().item() > 1e-3
