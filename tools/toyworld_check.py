"""Objective check of a toy model directory: short clips and a simplified block-wise long video, scored.

It exists to pick the shipped scheduler and dtype by measurement and to verify a freshly trained toy model
before it is shipped, without the distributed engine. The long video here is a *sequential* stand-in for the
block queue: each block's window is [last C latents of the previous block, one step cleaner | P own latents]
(the engine's `left_context=ahead`); it has no right-context K/V, so it is an approximation of the engine.

It is a tool beside `train_toyworld.py`, not part of `dualpar.toyworld`: the metrics read the toy world's
palette, so the world may not import the metrics.

Usage: python tools/toyworld_check.py --model dualpar/assets/toyworld [--scheduler unipc] [--long-blocks 20]

Legend: B batch, C latent channels, F latent frames, H/W latent rows/columns.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from dualpar.metrics import evaluate
from dualpar.models.codec import to_uint8_frames
from dualpar.toyworld.model_dir import ToyModel, read_model_dir
from dualpar.toyworld.sampling import predict_flow
from dualpar.toyworld.world import make_clip

LATENT_HW = (8, 8)


def make_scheduler(kind: str, steps: int):
    """A fresh flow-matching scheduler with shift 1, timesteps set."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if kind == "euler":
        s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    else:
        s = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0, num_train_timesteps=1000
        )
    s.set_timesteps(steps)
    return s


def guided_flow(
    model: ToyModel,
    z_BCFHW: torch.Tensor,
    sigma: float,
    cond_BLD: torch.Tensor,
    uncond_BLD: torch.Tensor,
    guidance: float,
) -> torch.Tensor:
    b = z_BCFHW.shape[0]
    text = torch.cat([cond_BLD, uncond_BLD.expand(b, -1, -1)])
    v = predict_flow(
        model.transformer,
        torch.cat([z_BCFHW, z_BCFHW]),
        torch.full((2 * b,), sigma),
        text,
        model.settings.get("x0_min_t", 0.05),
    )
    v_c, v_u = v.chunk(2)
    return v_u + guidance * (v_c - v_u)


@torch.no_grad()
def sample_t2v(
    model: ToyModel,
    prompts: list[str],
    frames: int = 8,
    steps: int = 25,
    guidance: float = 3.0,
    scheduler: str = "euler",
    seed: int = 0,
) -> torch.Tensor:
    """Latents [B, C, frames, 8, 8] with a diffusers scheduler (the engine's path)."""
    cond, uncond = model.text_encoder.encode(prompts), model.text_encoder.encode([""])
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(prompts), model.codec.z_dim, frames, *LATENT_HW, generator=g)
    sched = make_scheduler(scheduler, steps)
    for t in sched.timesteps:
        v = guided_flow(model, z, float(t) / 1000.0, cond, uncond, guidance)
        z = sched.step(v, t, z).prev_sample
    return z


@torch.no_grad()
def sample_long(
    model: ToyModel,
    prompt: str,
    blocks: int,
    p: int = 4,
    c: int = 2,
    steps: int = 25,
    guidance: float = 3.0,
    seed: int = 0,
    left_context: str = "ahead",
) -> tuple[torch.Tensor, list[int]]:
    """Sequential left-context-only block chain: latents [1, C, p*blocks + c, 8, 8] and block frame starts.

    `left_context="ahead"` gives block k the previous block one step cleaner, `"same"` at its own level.
    """
    lag = {"ahead": 1, "same": 0}[left_context]
    cond, uncond = model.text_encoder.encode([prompt]), model.text_encoder.encode([""])
    g = torch.Generator().manual_seed(seed)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    out, prev_states = [], None
    for k in range(blocks):
        own = p + c if k == 0 else p
        z = torch.randn(1, model.codec.z_dim, own, *LATENT_HW, generator=g)
        states = [z]
        for j in range(steps):
            s, s_next = float(sigmas[j]), float(sigmas[j + 1])
            window = z if prev_states is None else torch.cat([prev_states[j + lag][:, :, -c:], z], 2)
            v = guided_flow(model, window, s, cond, uncond, guidance)[:, :, -own:]
            z = z + (s_next - s) * v
            states.append(z)
        prev_states = states
        out.append(z)
    starts = [0] + [2 * (p + c + p * i) for i in range(blocks - 1)]
    return torch.cat(out, 2), starts


SHORT_KEYS = (
    "blobs_per_frame",
    "persistence",
    "caption_colour_rate",
    "jump_rate",
    "median_displacement",
    "palette_distance",
    "count_constant_rate",
)


def _mean_scores(rows: list) -> dict:
    return {k: round(float(np.mean([getattr(r, k) for r in rows])), 3) for k in SHORT_KEYS}


def short_clip_scores(model: ToyModel | None, scheduler: str, n: int = 16, guidance: float = 3.0) -> dict:
    """Blob statistics of n 16-frame T2V clips for data captions (seeds 1000..); None scores the data."""
    clips = [make_clip(1000 + i, 16) for i in range(n)]
    captions = [c[1] for c in clips]
    if model is None:
        return _mean_scores([evaluate(c[0], None, c[1]) for c in clips])
    z = sample_t2v(model, captions, scheduler=scheduler, guidance=guidance)
    video = model.codec.decode(z)
    return _mean_scores([evaluate(to_uint8_frames(video[i : i + 1]), None, captions[i]) for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--scheduler", default="euler", choices=["euler", "unipc"])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--long-blocks", type=int, default=0)
    ap.add_argument("--prompt", default="a red ball moving right")
    ap.add_argument("--left-context", default="ahead", choices=["ahead", "same"])
    ap.add_argument("--save-long", default="", help="write the long video as mp4 here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = read_model_dir(args.model)
    result = {
        "scheduler": args.scheduler,
        "short": short_clip_scores(model, args.scheduler, args.clips),
        "data": short_clip_scores(None, args.scheduler, args.clips),
    }
    if args.long_blocks:
        z, starts = sample_long(model, args.prompt, args.long_blocks, left_context=args.left_context)
        frames = to_uint8_frames(model.codec.decode(z))
        result["long"] = evaluate(frames, starts, args.prompt).to_json()
        if args.save_long:
            import importlib.util
            from pathlib import Path

            tool = Path(__file__).resolve().parents[2] / "tools" / "quality.py"
            spec = importlib.util.spec_from_file_location("quality_tool", tool)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.write_video(args.save_long, frames)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
