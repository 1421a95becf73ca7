"""Train, preview and export dualpar's default "toyworld" video model on CPU.

Recipe (see the toy-world design note): text-to-video WanTransformer3DModel on 16-frame 32x32 clips behind the
lossless space-time-to-depth codec (8 latent frames of 8x8x96), x0 prediction wrapped to a flow velocity,
t ~ sigmoid(N(1, 1)), 10 % caption dropout, AdamW 1e-3 with warmup and clipping, EMA weights shipped.
One addition for the block engine: with probability `--p-ahead`, the first 2 latent frames are noised a little
less than the rest (the engine's left context is one step cleaner) and left out of the loss.

Usage:
  python tools/train_toyworld.py --out runs/toyworld --steps 3600 --threads 1 [--resume] [--auto-export DIR]
  python tools/train_toyworld.py --out runs/toyworld --sample runs/toyworld/samples.png
  python tools/train_toyworld.py --out runs/toyworld --export dualpar/assets/toyworld
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dualpar.toyworld.codec import SpaceToDepthCodec  # noqa: E402
from dualpar.toyworld.model_dir import new_transformer, write_model_dir  # noqa: E402
from dualpar.toyworld.sampling import sample_euler, x0_to_flow  # noqa: E402
from dualpar.toyworld.text import WordEmbedder, WordPromptEncoder, WordTokenizer  # noqa: E402
from dualpar.toyworld.world import make_batch  # noqa: E402

VAL_TS = (0.2, 0.5, 0.8)
SAMPLE_PROMPTS = [
    "a red ball moving right", "a blue square moving up",
    "a green ball moving left and a yellow square moving down", "a small cyan ball moving down",
    "a big magenta square moving left", "a red ball moving right and a blue square moving up",
]


class ToyNet(torch.nn.Module):
    """Transformer + trainable word embedder; forward returns the x0 prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer()
        self.wan = new_transformer()
        self.text = WordEmbedder(len(self.tokenizer), self.tokenizer.max_length, 64)

    def forward(self, z_BCFHW: torch.Tensor, t_B: torch.Tensor, ids_BL: torch.Tensor) -> torch.Tensor:
        return self.wan(z_BCFHW, t_B * 1000.0, self.text(ids_BL), return_dict=False)[0]


def cpu_seconds() -> float:
    return time.process_time()


def flow_loss(net: ToyNet, x0: torch.Tensor, eps: torch.Tensor, t_B: torch.Tensor, ids: torch.Tensor,
              t_ctx_B: torch.Tensor | None = None, ctx_frames: int = 2) -> torch.Tensor:
    """MSE on v = eps - x0; if `t_ctx_B` is given, the first `ctx_frames` latents use it and are unscored."""
    tt = t_B.view(-1, 1, 1, 1, 1)
    z_t = (1 - tt) * x0 + tt * eps
    if t_ctx_B is not None:
        tc = t_ctx_B.view(-1, 1, 1, 1, 1)
        z_ctx = (1 - tc) * x0[:, :, :ctx_frames] + tc * eps[:, :, :ctx_frames]
        z_t = torch.cat([z_ctx, z_t[:, :, ctx_frames:]], 2)
    v = x0_to_flow(z_t, net(z_t, t_B, ids), t_B)
    err = (v - (eps - x0)) ** 2
    if t_ctx_B is not None:
        err = err[:, :, ctx_frames:]
    return err.mean()


def val_batch(codec: SpaceToDepthCodec, tok: WordTokenizer, n: int = 32) -> tuple[torch.Tensor, ...]:
    x, caps = make_batch(987654, 0, n, 16)
    g = torch.Generator().manual_seed(4321)
    x0 = codec.encode(torch.from_numpy(x))
    return x0, torch.randn(x0.shape, generator=g), tok(caps)


@torch.no_grad()
def validate(net: ToyNet, val: tuple[torch.Tensor, ...]) -> list[float]:
    x0, eps, ids = val
    return [round(float(flow_loss(net, x0, eps, torch.full((x0.shape[0],), t), ids)), 5) for t in VAL_TS]


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_nets(ckpt: dict) -> tuple[ToyNet, ToyNet]:
    net, ema = ToyNet(), ToyNet()
    net.load_state_dict(ckpt["net"])
    ema.load_state_dict(ckpt["ema"])
    return net, ema


def export(ema: ToyNet, out_dir: Path, step: int, cpu_min: float) -> None:
    """Write the shipped model directory from the EMA weights (atomically: tmp dir then rename)."""
    from dualpar.toyworld.model_dir import DualparSettings

    enc = WordPromptEncoder(ema.tokenizer, copy.deepcopy(ema.text))
    wan = copy.deepcopy(ema.wan)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    settings = DualparSettings(extra={"trained_steps": step, "trained_cpu_minutes": round(cpu_min, 1)})
    write_model_dir(tmp, wan, SpaceToDepthCodec(), enc, settings)
    if out_dir.exists():
        import shutil

        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out_dir)


@torch.no_grad()
def render_samples(ema: ToyNet, path: Path, seed: int = 0, steps: int = 25, guidance: float = 3.0) -> None:
    """Render one 16-frame clip per prompt to a PNG grid (rows = clips, columns = frames, 3x upscaled)."""
    from PIL import Image

    codec = SpaceToDepthCodec()
    tok = ema.tokenizer
    cond = ema.text(tok(SAMPLE_PROMPTS))
    uncond = ema.text(tok([""]))
    g = torch.Generator().manual_seed(seed)
    z = sample_euler(ema.wan, cond, uncond, (96, 8, 8, 8), steps, guidance, g)
    video = ((codec.decode(z).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # B,3,F,H,W
    b, _, f, h, w = video.shape
    grid = video.permute(0, 3, 2, 4, 1).reshape(b * h, f * w, 3).numpy()
    img = Image.fromarray(grid).resize((f * w * 3, b * h * 3), Image.NEAREST)
    img.save(path)


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "ckpt.pt"
    codec = SpaceToDepthCodec()
    torch.manual_seed(args.seed)
    net = ToyNet()
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, cpu_before = 0, 0.0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ckpt["net"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step, cpu_before = ckpt["step"], ckpt["cpu_seconds"]
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed at step {step} ({cpu_before / 60:.1f} CPU-min)", flush=True)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"params {n_params}", flush=True)
    val = val_batch(codec, net.tokenizer)
    cpu0, last_ckpt = cpu_seconds(), time.time()
    ema_params, net_params = list(ema.parameters()), list(net.parameters())
    g = torch.Generator()

    def checkpoint() -> None:
        cpu = cpu_before + cpu_seconds() - cpu0
        save_atomic({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                     "cpu_seconds": cpu, "torch_rng": torch.get_rng_state(), "args": vars(args)}, ckpt_path)
        if args.auto_export:
            export(ema, Path(args.auto_export), step, cpu / 60)
        print(f"checkpoint step {step} cpu {cpu / 60:.1f} min", flush=True)

    while step < args.steps:
        g.manual_seed(args.seed * 1_000_003 + step)
        x, caps = make_batch(args.seed, step, args.batch, 16)
        x0 = codec.encode(torch.from_numpy(x))
        keep = torch.rand(args.batch, generator=g) >= args.p_drop
        ids = net.tokenizer(caps) * keep.long().view(-1, 1)
        t = torch.sigmoid(torch.randn(args.batch, generator=g) + args.t_mean)
        eps = torch.randn(x0.shape, generator=g)
        t_ctx = None
        if float(torch.rand(1, generator=g)) < args.p_ahead:
            t_ctx = (t - torch.rand(args.batch, generator=g) * args.ahead_max).clamp(min=0.0)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = flow_loss(net, x0, eps, t, ids, t_ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, net_params, 1.0 - decay)
        step += 1
        rec: dict = {}
        if step % 25 == 0 or step == 1:
            cpu = cpu_before + cpu_seconds() - cpu0
            rec = {"step": step, "loss": round(float(loss.detach()), 5), "gnorm": round(float(gnorm), 3),
                   "lr": lr, "cpu_min": round(cpu / 60, 2), "time": round(time.time())}
        if step % args.val_every == 0 or step == args.steps:
            rec = rec or {"step": step, "cpu_min": round((cpu_before + cpu_seconds() - cpu0) / 60, 2)}
            rec["val"] = validate(ema, val)
        if rec:
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps(rec) + "\n")
        if time.time() - last_ckpt > args.ckpt_seconds or step == args.steps:
            checkpoint()
            last_ckpt = time.time()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/toyworld")
    p.add_argument("--steps", type=int, default=3600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--p-drop", type=float, default=0.1, help="caption dropout probability")
    p.add_argument("--t-mean", type=float, default=1.0, help="t ~ sigmoid(N(t_mean, 1))")
    p.add_argument("--p-ahead", type=float, default=0.3, help="P(cleaner 2-latent left context)")
    p.add_argument("--ahead-max", type=float, default=0.08, help="max noise-level gap of that context")
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--ckpt-seconds", type=float, default=180.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--auto-export", default="", help="also export the EMA model dir at every checkpoint")
    p.add_argument("--export", default="", help="export the checkpoint's EMA weights to this dir and exit")
    p.add_argument("--sample", default="", help="render EMA samples from the checkpoint to this PNG and exit")
    p.add_argument("--sample-seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.export or args.sample:
        ckpt = torch.load(Path(args.out) / "ckpt.pt", weights_only=False)
        _, ema = load_nets(ckpt)
        ema.eval()
        if args.export:
            export(ema, Path(args.export), ckpt["step"], ckpt["cpu_seconds"] / 60)
            print(f"exported step {ckpt['step']} to {args.export}")
        if args.sample:
            render_samples(ema, Path(args.sample), args.sample_seed)
            print(f"samples of step {ckpt['step']} in {args.sample}")
        return
    np.seterr(all="ignore")
    train(args)


if __name__ == "__main__":
    main()
