"""Sparse attention quality and cost against dense, on the same machine and seed.

For each density and routing it renders the toyworld job with `job=sparse_video` and records:
- the density achieved and the attention FLOP fraction, with the routing overhead FLOPs;
- the render time against a dense render;
- PSNR and SSIM of the decoded frames against the dense job (decoded exactly through the model's lossless
  codec, not from the lossy mp4);
- the dense-vs-dense noise floor (a second dense run).

Writes docs/results/bench_sparse.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from dualpar.models.registry import packaged_model_dir
from dualpar.testing.jobs import load_latents, render
from dualpar.toyworld.codec import SpaceToDepthCodec


def _frames(out: Path, codec) -> torch.Tensor:
    """Exact decoded frames in [0, 1], [F, 3, H, W]."""
    video = codec.decode(load_latents(out))  # [1, 3, F, H, W] in [-1, 1]
    return ((video[0].clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> float:
    """Mean SSIM over frames and channels with a uniform window (Wang et al. constants)."""
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = (F.avg_pool2d(x, window, 1) for x in (a, b))
    var_a = F.avg_pool2d(a * a, window, 1) - mu_a**2
    var_b = F.avg_pool2d(b * b, window, 1) - mu_b**2
    cov = F.avg_pool2d(a * b, window, 1) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def _attention(report: dict) -> dict:
    stats = [s["attention"] for s in report["stages"]]
    computed, dense = sum(s["pairs_computed"] for s in stats), sum(s["pairs_dense"] for s in stats)
    return {"density": computed / dense if dense else 1.0, "overhead_flops": sum(s["overhead_flops"] for s in stats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--routings", nargs="+", default=["error_aware", "top_p"])
    parser.add_argument("--out", type=Path, default=Path("docs/results/bench_sparse.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = SpaceToDepthCodec.from_pretrained(packaged_model_dir("toyworld") / "vae")
    base = ["model=toyworld", f"frames={args.frames}", "output.latents=true", "output.video=false", "seed=0"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dense = render(root / "dense", base)
        again = render(root / "dense2", base)
        ref = _frames(root / "dense", codec)
        floor = _frames(root / "dense2", codec)
        dense_s = min(dense["phases"]["render_s"], again["phases"]["render_s"])
        for routing in args.routings:
            for density in args.densities:
                name = f"{routing}-{density}"
                rep = render(root / name, [*base, "job=sparse_video", f"attention.density={density}",
                                           f"attention.routing={routing}"])
                frames = _frames(root / name, codec)
                row = {"routing": routing, "density_asked": density, **_attention(rep),
                       "render_s": rep["phases"]["render_s"], "dense_render_s": dense_s,
                       "time_vs_dense": rep["phases"]["render_s"] / dense_s,
                       "psnr_db": psnr(frames, ref), "ssim": ssim(frames, ref)}
                rows.append(row)
                print(json.dumps(row))
    result = {"model": "toyworld", "frames": args.frames, "threads": 1,
              "note": "density counts every self-attention call, including dense steps (attention.dense_steps)",
              "noise_floor": {"psnr_db": psnr(floor, ref), "ssim": ssim(floor, ref)}, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
