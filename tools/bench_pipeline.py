"""Pipeline speedup on this machine: 1 stage (1 process, 1 thread) against N stages (N processes, 1 thread each).

Both runs render the same job; the ratio of their render phases (weights loaded, processes started) is the
speedup. Writes docs/results/bench_pipeline.json (or --out) and prints it.

`--threads` instead measures the default thread count: the `dualpar` command renders the quick-start job with
`launcher=spawn parallel.stages=N`, once with torch's old default (one thread per core in every process,
`parallel.threads=<cores>`) and once with dualpar's (the cores shared among the processes), alternating
`--rounds` times. Writes docs/results/bench_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

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
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", action="store_true", help="compare the default threads with one per core")
    parser.add_argument("--rounds", type=int, default=2, help="--threads: alternating rounds")
    args = parser.parse_args()
    if args.threads:
        return bench_threads(args)
    args.out = args.out or Path("docs/results/bench_pipeline.json")
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


def _cli_render(out: Path, overrides: list[str]) -> dict:
    """One `dualpar` command as a user runs it (no OMP_NUM_THREADS): its wall time and report."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "dualpar", f"output.dir={out}", "output.progress=false", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    report = json.loads((out / "report.json").read_text())
    threads = next(line for line in proc.stderr.splitlines() if line.strip().startswith("threads:"))
    return {
        "command_s": wall,
        "render_s": report["phases"]["render_s"],
        "plan_threads": threads.strip(),
        "threads_per_process": report["threads_per_process"],
    }


def bench_threads(args) -> None:
    from dualpar.threads import node_cores

    cores = node_cores()
    job = ["launcher=spawn", f"parallel.stages={args.stages}"]
    variants = {"one_per_core": [f"parallel.threads={cores}"], "default": []}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, extra in variants.items():
                runs[name].append(_cli_render(Path(tmp) / f"{name}{r}", [*job, *extra]))
                print(name, r, runs[name][-1], flush=True)
    result = {
        "machine": {
            "cpus": cores,
            "processor": platform.processor() or platform.machine(),
            "load_avg_at_end": os.getloadavg(),
        },
        "command": "python -m dualpar " + " ".join(job) + " [parallel.threads=<cores>]",
        "runs": runs,
        "median_command_s": {k: median(x["command_s"] for x in v) for k, v in runs.items()},
        "median_render_s": {k: median(x["render_s"] for x in v) for k, v in runs.items()},
    }
    out = args.out or Path("docs/results/bench_threads.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
