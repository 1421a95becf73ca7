"""Pipeline speedup on this machine: 1 stage (1 process, 1 thread) against N stages (N processes, 1 thread each).

Both runs render the same job; the ratio of their render phases (weights loaded, processes started) is the
speedup. Writes docs/results/bench_pipeline.json (or --out) and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from dualpar.cli import prepare
from dualpar.testing.jobs import compose
from dualpar.testing.multi import spawn_jobs


def _job(out: Path, args, stages: int) -> list[str]:
    return [
        f"model={args.model}",
        f"frames={args.frames}",
        f"height={args.size}",
        f"width={args.size}",
        f"schedule.steps={args.steps}",
        "schedule.block_latents=2",
        "schedule.context_latents=1",
        "output.video=false",
        "output.latents=true",
        "output.progress=false",
        "parallel.threads=1",
        f"parallel.stages={stages}",
        "launcher=spawn",
        f"output.dir={out}",
        f"parallel.split_mode={args.split_mode}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="small")
    parser.add_argument("--frames", type=int, default=137, help="137 frames = 16 blocks of P=2, C=1")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--split-mode", default="even")
    parser.add_argument("--out", type=Path, default=Path("docs/results/bench_pipeline.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = spawn_jobs([prepare(compose(_job(Path(tmp) / "1", args, 1)))[0]])[0]
        many = spawn_jobs([prepare(compose(_job(Path(tmp) / "n", args, args.stages)))[0]])[0]
    t1, tn = one["phases"]["render_s"], many["phases"]["render_s"]
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine()},
        "job": {
            "model": args.model,
            "frames": args.frames,
            "size": args.size,
            "steps": args.steps,
            "blocks": one["blocks"],
            "passes": one["plan"]["passes"],
            "split": many["plan"]["split"],
        },
        "threads_per_process": 1,
        "render_s": {"1": t1, str(args.stages): tn},
        "speedup": t1 / tn,
        "busy_fraction": {
            str(args.stages): [s["busy_fraction"] for s in many["stages"]],
            "1": [one["stages"][0]["busy_fraction"]],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
