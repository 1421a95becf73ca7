"""Measure fault handling and checkpoint cost; writes docs/results/faults.json.

    python tools/bench_faults.py [--model tiny] [--frames 49] [--steps 3] [--repeats 3] [--out PATH]
    python tools/bench_faults.py --catalogue [--jobs 2]   # bad inputs through the real CLI -> faults_catalogue.json

- catalogue: every case runs the real `dualpar` command in a fresh output directory and records the exit code,
  the message, whether any traceback appeared and whether anything was created (target: exit 2, a message
  naming the key, no traceback, nothing created);

- checkpoint cost: the same job with checkpoint.every=0 and =1, one process and two spawned stages; overhead per
  iteration = (best render time with a checkpoint every iteration - best without) / iterations, beside the
  measured drain and save seconds per checkpoint and the checkpoint size at every iteration;
- spawn fault: rank 1 SIGKILLs itself; seconds from its death to every rank having exited (the launch fails),
  then from that failure to the resumed run rendering again (process start, weight load, checkpoint load);
- Ray fault: the same on a local Ray cluster (fractional CPUs): detection by `ray.wait`, group teardown and
  restart, resumed rendering.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def _render(out: Path, overrides: list[str]) -> dict:
    from dualpar.testing.jobs import render

    return render(out, [*overrides, "output.overwrite=true"])


def checkpoint_cost(tmp: Path, base: list[str], stages: int, repeats: int) -> dict:
    launcher = ["launcher=spawn", f"parallel.stages={stages}"] if stages > 1 else []
    best: dict[int, float] = {}
    stats = None
    for every in (0, 1):
        times = []
        for r in range(repeats):
            rep = _render(tmp / f"cost-{stages}-{every}-{r}", [*base, *launcher, f"checkpoint.every={every}"])
            times.append(rep["phases"]["render_s"])
            stats = rep["restart"]["checkpoint"] if every else stats
            iterations = rep["plan"]["iterations"]
        best[every] = min(times)
    saves = stats["saves"]
    return {
        "stages": stages,
        "iterations": iterations,
        "render_s_best": {"every=0": best[0], "every=1": best[1]},
        "overhead_per_iteration_s": (best[1] - best[0]) / iterations,
        "save_s_mean": sum(s["save_s"] for s in saves) / len(saves),
        "drain_s_mean": sum(s["drain_s"] for s in saves) / len(saves),
        "per_checkpoint_s": sum(s["save_s"] + s["drain_s"] for s in saves) / len(saves),
        "bytes_by_iteration": {s["iteration"]: s["bytes"] for s in saves},
        "bytes_max": max(s["bytes"] for s in saves),
    }


def spawn_fault(tmp: Path, base: list[str]) -> dict:
    from dualpar.checkpoint import kill_markers
    from dualpar.errors import PeerError

    out = tmp / "spawn-fault"
    kill = ["launcher=spawn", "parallel.stages=2", "checkpoint.every=2", "debug.kill_rank=1"]
    kill.append("debug.kill_at_iteration=5")
    try:
        _render(out, [*base, *kill])
        raise RuntimeError("the injected fault did not fire")
    except PeerError:
        failed_at = time.time()
    died_at = kill_markers(out / "checkpoint")[-1]["time"]
    report = _render(out, [*base, *kill, "resume=true"])
    return {
        "detect_and_exit_s": failed_at - died_at,
        "restart_s": report["restart"]["render_started_at"] - failed_at,
        "resumed_from_iteration": report["restart"]["resumed_from_iteration"],
        "note": "restart_s runs from the failed launch to rendering again: fork from a warm forkserver, weight and "
        "checkpoint load, rendezvous",
    }


def ray_fault(tmp: Path, base: list[str]) -> dict:
    import ray

    from dualpar.launch.ray import start_local_cluster

    start_local_cluster(num_cpus=2, log_to_driver=False)
    try:
        time.sleep(5)  # let the prestarted workers finish importing, as on a cluster that has been up a while
        kill = ["launcher=ray", "parallel.stages=2", "checkpoint.every=2", "debug.kill_rank=1"]
        kill += ["debug.kill_at_iteration=5", "ray.max_restarts=1"]
        report = _render(tmp / "ray-fault", [*base, *kill])
    finally:
        ray.shutdown()
    failed = report["ray"]["attempts"][0]
    return {
        "detect_s": failed["detect_s"],
        "group_ready_s": failed["group_ready_s"],
        "restart_s": failed["restart_s"],
        "first_group_ready_s": failed["ready_at"] - failed["started_at"],
        "restarts": report["ray"]["restarts"],
        "bundle": report["ray"]["bundle"],
        "note": "detect_s: SIGKILL -> ray.wait returned; group_ready_s: detection -> new placement group and "
        "actors up; restart_s: detection -> resumed rendering (adds weight and checkpoint load, rendezvous)",
    }


_BAD_VALUES = {
    "frames": ["abc", "1.5", "", "true", "0", "-5", "1000000000", "[1,2]", "null_x"],
    "seed": ["abc", "1.5", "2**70", "1180591620717411303424", "-1", "true", "[1]"],
    "height": ["100", "0", "-16", "abc", "65536", "1.5"],
    "width": ["72", "0", "abc", "65536"],
    "schedule.steps": ["0", "-1", "abc", "2.5"],
    "schedule.block_latents": ["0", "abc"],
    "schedule.context_latents": ["-1", "9"],
    "schedule.guidance": ["nan", "inf", "-1", "abc", "true"],
    "schedule.left_context": ["behind", "1"],
    "schedule.flow_shift": ["abc", "nan"],
    "schedule.feature_cache": ["maybe", "2"],
    "parallel.stages": ["0", "abc", "99"],
    "parallel.threads": ["-1", "0", "abc", "1.5"],
    "parallel.timeout_s": ["0", "-3", "abc", "nan"],
    "parallel.max_sends_in_flight": ["0", "abc"],
    "parallel.split_mode": ["random"],
    "parallel.cfg_split": ["perhaps"],
    "output.dir": ["''"],
    "output.video": ["maybe"],
    "output.latents": ["2"],
    "output.fps": ["0", "abc", "-24"],
    "output.overwrite": ["yes_please"],
    "checkpoint.every": ["-1", "abc"],
    "checkpoint.keep": ["0", "abc"],
    "resume": ["maybe", "1.5"],
    "launcher": ["mpi", "torchrun"],
    "model": ["nope", "wan2.1-t2v-1.3b"],
    "model.dtype": ["float8", "1"],
    "model.device": ["tpu", "cuda"],
    "model.path": ["/nonexistent/model"],
    "prompt": ["[]", "''", "5", "[{frame:x,text:a}]", "[{frame:5,text:a}]", "[{text:a}]"],
    "ray.placement": ["ANYWHERE"],
    "ray.max_restarts": ["-1"],
    "ray.rendezvous": ["carrier_pigeon"],
    "debug.kill_rank": ["5"],
    "debug.stall_rank": ["1"],
}
_OTHER_CASES = [
    ["+seeed=1"],
    ["seeed=1"],
    ["+parallel.stagez=2"],
    ["parallel.stagez=2"],
    ["+output.dri=x"],
    ["frames=["],
    ["model=tinyy"],
    ["job=movie"],
    ["attention=fancy"],
    ["cluster=moon"],
    ["--frobnicate"],
    ["frames"],
    ["parallel.stages=2"],
    ["parallel.stages=2", "launcher=spawn", "parallel.split=[1,2]"],
    ["parallel.stages=2", "launcher=spawn", "parallel.split=[1,a]"],
    ["schedule.block_latents=2", "schedule.context_latents=3"],
    ["output.video=false", "output.latents=false"],
    ["resume=true"],
    ["job=av", "audio.codec=opus"],
    ["job=av", "+audio.gain=2"],
    ["+audio.guidance=2"],
    ["debug.kill_rank=0"],
    ["debug.kill_rank=0", "debug.kill_at_iteration=99"],
]


def catalogue_cases() -> list[list[str]]:
    cases = [[f"{key}={value}"] for key, values in _BAD_VALUES.items() for value in values]
    return cases + _OTHER_CASES


def _catalogue_one(tmp: Path, index: int, overrides: list[str]) -> dict:
    import subprocess

    out = tmp / f"case{index}"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # model.device=cuda must be refused the same way on any machine
    args = ["model=tiny", f"output.dir={out}", f"checkpoint.dir={out}/checkpoint", *overrides]
    if any(o.startswith(("model=", "model.path=")) for o in overrides):
        args = args[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "dualpar.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dualpar: error")] or [
        proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    ]
    return {
        "input": " ".join(overrides),
        "exit": proc.returncode,
        "message": lines[0][:400],
        "traceback": "Traceback" in proc.stderr,
        "created": out.exists(),
    }


def catalogue(out_path: Path, jobs: int) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    cases = catalogue_cases()
    with tempfile.TemporaryDirectory(prefix="dualpar-catalogue-") as tmp, ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(lambda ic: _catalogue_one(Path(tmp), *ic), enumerate(cases)))
    summary = {
        "cases": len(rows),
        "exit_2": sum(r["exit"] == 2 for r in rows),
        "tracebacks": sum(r["traceback"] for r in rows),
        "created_something": sum(r["created"] for r in rows),
    }
    out_path.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")
    print(json.dumps(summary))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/results/faults.json"))
    parser.add_argument("--catalogue", action="store_true", help="run the bad-input catalogue instead")
    parser.add_argument("--jobs", type=int, default=2, help="catalogue cases run at once")
    args = parser.parse_args(argv)
    if args.catalogue:
        catalogue(args.out.with_name("faults_catalogue.json"), args.jobs)
        return 0
    torch.set_num_threads(1)
    base = [f"model={args.model}", f"frames={args.frames}", f"schedule.steps={args.steps}", "parallel.threads=1"]
    base += ["output.latents=true", "parallel.timeout_s=60"]
    results = {
        "job": {"model": args.model, "frames": args.frames, "steps": args.steps, "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory(prefix="dualpar-bench-faults-") as tmp:
        tmp_path = Path(tmp)
        results["checkpoint_cost"] = [checkpoint_cost(tmp_path, base, s, args.repeats) for s in (1, 2)]
        results["spawn_fault"] = spawn_fault(tmp_path, base)
        results["ray_fault"] = ray_fault(tmp_path, base)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
