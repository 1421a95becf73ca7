"""Per-stage memory: peak RSS at 8 and at 64 blocks (flat in video length) and resident parameter bytes
against full model / N (only the own shard is loaded). Writes docs/results/bench_memory.json (or --out)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from dualpar.cli import prepare
from dualpar.models.loader import build_full_transformer
from dualpar.models.registry import builtin_info
from dualpar.testing.jobs import compose
from dualpar.testing.multi import spawn_jobs


def _run(tmp: Path, model: str, stages: int, frames: int, size: int) -> dict:
    over = [
        f"model={model}",
        f"frames={frames}",
        f"height={size}",
        f"width={size}",
        "schedule.steps=2",
        "schedule.block_latents=2",
        "schedule.context_latents=1",
        "output.progress=false",
        "parallel.threads=1",
        f"parallel.stages={stages}",
        "launcher=spawn",
        f"output.dir={tmp / f'{stages}-{frames}'}",
    ]
    return spawn_jobs([prepare(compose(over))[0]])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="small")
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("docs/results/bench_memory.json"))
    args = parser.parse_args()
    full = sum(p.numel() * p.element_size() for p in build_full_transformer(builtin_info(args.model, 0)).parameters())
    with tempfile.TemporaryDirectory() as tmp:
        short = _run(Path(tmp), args.model, args.stages, 65, args.size)  # 8 blocks
        long = _run(Path(tmp), args.model, args.stages, 513, args.size)  # 64 blocks
    stages = []
    for s8, s64 in zip(short["stages"], long["stages"]):
        stages.append(
            {
                "stage": s8["stage"],
                "layers": s8["layers"],
                "peak_rss_8_blocks": s8["peak_rss_bytes"],
                "peak_rss_64_blocks": s64["peak_rss_bytes"],
                "rss_ratio_64_vs_8": s64["peak_rss_bytes"] / s8["peak_rss_bytes"],
                "param_bytes": s8["param_bytes"],
                "param_ratio_vs_full_over_n": s8["param_bytes"] / (full / args.stages),
            }
        )
    result = {
        "model": args.model,
        "stages": args.stages,
        "size": args.size,
        "full_param_bytes": full,
        "blocks": [short["blocks"], long["blocks"]],
        "per_stage": stages,
        "targets": {"rss_ratio_64_vs_8": 1.05, "param_ratio_vs_full_over_n": 1.10},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
