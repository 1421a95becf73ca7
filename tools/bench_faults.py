"""Measure fault handling and checkpoint cost; writes docs/results/faults.json.

    python tools/bench_faults.py [--model tiny] [--frames 49] [--steps 3] [--repeats 3] [--out PATH]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/results/faults.json"))
    args = parser.parse_args(argv)
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
