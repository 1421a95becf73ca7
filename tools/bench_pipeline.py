"""Pipeline speedup on this machine: 1 stage (1 process, 1 thread) against N stages (N processes, 1 thread each).

Both runs render the same job; the ratio of their render phases (weights loaded, processes started) is the
speedup. Writes docs/results/bench_pipeline.json (or --out) and prints it.

`--threads` instead measures the default thread count: the `dualpar` command renders the quick-start job with
`launcher=spawn parallel.stages=N`, once with torch's old default (one thread per core in every process,
`parallel.threads=<cores>`) and once with dualpar's (the cores shared among the processes), alternating
`--rounds` times. Writes docs/results/bench_threads.json.

`--video` measures the output side (issue 15): the same job with video off and on, on 1 and N stages, for each
`output.worker` mode in `--modes` (`before`: pass no output.worker key, how the code before the output worker
was measured), `--repeats` times in rotation, medians reported. Two ratios per mode: the render against the
larger of its two parts (denoise: the video-off render; output: the decode + write seconds of the video-on
render), target <= 1.10, and the N-stage speedup with video on against video off, target >= 0.95. Writes
docs/results/bench_output_worker.json, keeping the modes of an earlier run that this one did not measure.

`--worker-kind` measures where the output worker should run (same JSON, "thread_vs_process"): a denoise-like
loop of small torch ops on the main thread while the job's real OutputWriter (VAE decode, uint8, x264) writes
`--frames` of random latents on a thread, in a spawned process (latents sent over a pipe, start-up not timed),
or after the loop (serial); each against the larger of the two parts run alone. 1 torch thread each.
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


def _job(out: Path, args, stages: int, video: bool = False, mode: str = "before") -> list[str]:
    shown = ["output.video=true", "output.preview=false", "output.latents=false"] if video else []
    worker = [] if mode == "before" else [f"output.worker={mode}"]
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
        *shown,
        *worker,
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
    parser.add_argument("--video", action="store_true", help="video off against on, per output.worker mode")
    parser.add_argument(
        "--modes",
        default="inline,thread",
        help="--video: output.worker modes, or before (no output.worker key: the code before it)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="--video: rotations (medians reported)")
    parser.add_argument("--worker-kind", action="store_true", help="output worker: thread against process")
    args = parser.parse_args()
    if args.threads:
        return bench_threads(args)
    if args.video:
        return bench_video(args)
    if args.worker_kind:
        return bench_worker_kind(args)
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


def _video_row(report: dict) -> dict:
    phases = report["phases"]
    return {
        "render_s": phases["render_s"],
        "decode_s": phases.get("decode_s", 0.0),
        "output_wait_s": phases.get("output_wait_s", phases.get("decode_s", 0.0)),
    }


def _mode_medians(med: dict, mode: str) -> dict:
    """One mode's medians with the video-off ones they were compared against."""
    return {k: v for k, v in med.items() if k.startswith((mode + "/", "off/"))}


def bench_video(args) -> None:
    """Video off and on, 1 and N stages, per output.worker mode (module docstring)."""
    modes = args.modes.split(",")
    variants = [(n, False, "before") for n in (1, args.stages)]
    variants += [(n, True, m) for m in modes for n in (1, args.stages)]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for n, video, mode in variants:
                name = f"{mode}/video/{n}" if video else f"off/{n}"
                out = Path(tmp) / f"{name.replace('/', '-')}-{r}"
                report = spawn_jobs([prepare(compose(_job(out, args, n, video, mode)))[0]])[0]
                runs.setdefault(name, []).append(_video_row(report))
                print(name, r, runs[name][-1], flush=True)
    med = {k: {f: median(x[f] for x in v) for f in v[0]} for k, v in runs.items()}
    n = args.stages
    off1, offn = med["off/1"]["render_s"], med[f"off/{n}"]["render_s"]
    summary = {}
    for mode in modes:
        on1, onn = med[f"{mode}/video/1"], med[f"{mode}/video/{n}"]
        summary[mode] = {
            "render_over_max_part": {
                str(k): on["render_s"] / max(off, on["decode_s"]) for k, on, off in ((1, on1, off1), (n, onn, offn))
            },
            "speedup_video_on": on1["render_s"] / onn["render_s"],
            "speedup_video_off": off1 / offn,
            "speedup_on_over_off": (on1["render_s"] / onn["render_s"]) / (off1 / offn),
        }
    out = args.out or Path("docs/results/bench_output_worker.json")
    previous = json.loads(out.read_text()) if out.exists() else {}
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "caveat": "2 cores shared with other engineers' tests while measuring: medians of rotated repeats; "
        f"load average at the end {os.getloadavg()}",
        "job": {"model": args.model, "frames": args.frames, "size": args.size, "steps": args.steps, "stages": n},
        "threads_per_process": 1,
        "targets": {"render_over_max_part": "<= 1.10", "speedup_on_over_off": ">= 0.95"},
        "modes": previous.get("modes", {}) | {m: {"median": _mode_medians(med, m)} | summary[m] for m in modes},
        "runs": previous.get("runs", {})
        | {f"{k} ({','.join(modes)})" if k.startswith("off/") else k: v for k, v in runs.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("job", "modes")}, indent=2))


def _denoise_like(seconds_hint: int) -> None:
    """Small torch ops in a Python loop, like a DiT stage's forward (GIL held between kernels)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x, w1, w2 = (torch.randn(s, generator=g) for s in ((256, 256), (256, 1024), (1024, 256)))
    for _ in range(seconds_hint):
        x = torch.nn.functional.layer_norm(torch.nn.functional.gelu(x @ w1) @ w2 + x, (256,))


def _output_job(args, out: Path):
    import torch

    from dualpar.models.loader import load_codec
    from dualpar.output import OutputWriter

    overrides = _job(out, args, 1, video=True, mode="inline") + ["output.overwrite=true"]
    _, job = prepare(compose(overrides))
    h, w = job.latent_hw
    g = torch.Generator().manual_seed(0)
    blocks = [
        (k, (torch.randn(1, job.info.codec.z_dim, len(job.geometry.own_range(k)), h, w, generator=g),))
        for k in range(job.geometry.n_blocks)
    ]
    return OutputWriter(job, load_codec(job.info, torch.device("cpu")), out), blocks


def _process_writer(args, out: Path, inbox, outbox) -> None:
    import torch

    torch.set_num_threads(1)
    writer, _ = _output_job(args, out)
    outbox.put("ready")
    while (item := inbox.get()) is not None:
        writer.write_block(*item)
    writer.close()
    outbox.put("done")


def _write_all(args, out: Path) -> None:
    writer, blocks = _output_job(args, out)
    for block, latents in blocks:
        writer.write_block(block, latents)
    writer.close()


def _worker_kind_round(args, tmp: Path, r: int, loops: int, rows: dict[str, list[float]]) -> None:
    import multiprocessing as mp
    import threading

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        rows.setdefault(name, []).append(time.perf_counter() - t0)
        print(name, r, rows[name][-1], flush=True)

    def threaded() -> None:
        t = threading.Thread(target=_write_all, args=(args, tmp / f"thread{r}"))
        t.start()
        _denoise_like(loops)
        t.join()

    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_process_writer, args=(args, tmp / f"proc{r}", inbox, outbox))
    proc.start()
    assert outbox.get(timeout=600) == "ready"
    _, blocks = _output_job(args, tmp / f"procmain{r}")

    def in_process() -> None:
        for item in blocks:
            inbox.put(item)
        inbox.put(None)
        _denoise_like(loops)
        assert outbox.get(timeout=600) == "done"

    timed("denoise_alone", lambda: _denoise_like(loops))
    timed("output_alone", lambda: _write_all(args, tmp / f"alone{r}"))
    timed("serial", lambda: (_denoise_like(loops), _write_all(args, tmp / f"serial{r}")))
    timed("thread", threaded)
    timed("process", in_process)
    proc.join()


def bench_worker_kind(args) -> None:
    """Thread against process for the output worker (module docstring)."""
    import torch

    torch.set_num_threads(1)
    loops = args.steps * 300
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            _worker_kind_round(args, Path(tmp), r, loops, rows)
    med = {k: median(v) for k, v in rows.items()}
    parts = max(med["denoise_alone"], med["output_alone"])
    out = args.out or Path("docs/results/bench_output_worker.json")
    result = json.loads(out.read_text()) if out.exists() else {}
    result["thread_vs_process"] = {
        "what": "denoise-like torch loop on the main thread beside the job's OutputWriter writing every block",
        "job": {"model": args.model, "frames": args.frames, "size": args.size},
        "load_avg_at_end": os.getloadavg(),
        "median_s": med,
        "over_max_part": {k: med[k] / parts for k in ("serial", "thread", "process")},
        "runs": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["thread_vs_process"], indent=2))


if __name__ == "__main__":
    main()
