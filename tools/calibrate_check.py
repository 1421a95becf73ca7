"""Calibrate the simulator on a measured 1-stage CPU run, predict 1-, 2- and 3-stage runs, then measure them.

Writes docs/results/calibration.json (or --out): for every round, the 1-stage run's report predicts the wall
and render times of that round's 1-, 2- and 3-stage runs (`dualpar.sim.calibrate.predict_breakdown`), next to
the measured ones; the summary holds the median error per stage count over the rounds.

Why rounds: on a shared (virtualised) 2-core machine the speed of the same run drifts by 20% or more over
minutes, so each prediction is calibrated on the 1-stage run measured just before it, and the medians over
several rounds are reported. Runs go through the real launcher (launcher=spawn), so a run's wall time is what
a user's launch would report. Before each run the tool waits for the machine to go idle, measures the CPU time
other processes take during the run, and repeats a run that shared the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from statistics import median

import psutil

from dualpar.sim.calibrate import predict_breakdown
from dualpar.sim.cluster import load_cluster
from dualpar.testing.jobs import render

STAGES = (1, 2, 3)


def _job(args, stages: int) -> list[str]:
    return [f"model={args.model}", f"frames={args.frames}", f"height={args.size}", f"width={args.size}",
            f"schedule.steps={args.steps}", "output.video=false", "output.latents=true", "parallel.threads=1",
            f"parallel.stages={stages}", "launcher=spawn"]


def _busy_cpu_s() -> float | None:
    """CPU seconds every process on the machine has used since boot (None where /proc/stat is missing)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and everything it started (ranks are reaped by the forkserver)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    return total


def _wait_idle(max_wait_s: float, window_s: float = 2.0, busy_cores: float = 0.1) -> None:
    """Wait (at most `max_wait_s`) until other processes use under `busy_cores` cores over `window_s`."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        b0, c0 = _busy_cpu_s(), _own_cpu_s()
        if b0 is None:
            return
        time.sleep(window_s)
        if (_busy_cpu_s() - b0 - (_own_cpu_s() - c0)) / window_s < busy_cores:
            return


def _measure(out: Path, args, stages: int) -> tuple[dict, float | None, int]:
    """One launch on a quiet machine: its report, other processes' CPU seconds during it, and the tries."""
    for attempt in range(1, args.tries + 1):
        _wait_idle(args.idle_wait)
        b0, c0 = _busy_cpu_s(), _own_cpu_s()
        report = render(out / f"{stages}-{attempt}", _job(args, stages))
        b1 = _busy_cpu_s()
        other = None if b0 is None or b1 is None else max(0.0, b1 - b0 - (_own_cpu_s() - c0))
        if other is None or other <= args.max_other_cpu * report["wall_s"]:
            break
        print(f"  {stages} stages: other processes took {other:.2f} CPU s during the run; measuring again")
    return report, other, attempt


def _row(base: dict, rep: dict, stages: int, cluster, other: float | None, tries: int) -> dict:
    pred = predict_breakdown(base, stages, cluster)
    row = {"stages": stages, "predicted_wall_s": pred["predicted_wall_s"], "measured_wall_s": rep["wall_s"],
           "predicted_render_s": pred["predicted_denoise_decode_s"], "measured_render_s": rep["phases"]["render_s"],
           "predicted_phases": pred["phases"],
           "measured_phases": {k: rep["phases"][k] for k in ("load_s", "encode_s", "render_s")},
           "other_cpu_s": other, "tries": tries}
    row["wall_error"] = row["predicted_wall_s"] / row["measured_wall_s"] - 1
    row["render_error"] = row["predicted_render_s"] / row["measured_render_s"] - 1
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small")
    parser.add_argument("--frames", type=int, default=145)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cluster", default="cpu2")
    parser.add_argument("--tries", type=int, default=3, help="launches per run while other processes intrude")
    parser.add_argument("--idle-wait", type=float, default=60.0, help="seconds to wait for an idle machine")
    parser.add_argument("--max-other-cpu", type=float, default=0.05,
                        help="other processes' CPU seconds per wall second above which a run is repeated")
    parser.add_argument("--out", type=Path, default=Path("docs/results/calibration.json"))
    parser.add_argument("--reports", type=Path, help="also keep every run's report.json here (to refit offline)")
    args = parser.parse_args()
    cluster = load_cluster(args.cluster)
    rows, solo = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            measured = {n: _measure(Path(tmp) / str(r), args, n) for n in STAGES}
            solo.append(measured[1][0])
            if args.reports is not None:
                args.reports.mkdir(parents=True, exist_ok=True)
                for n, (rep, _, _) in measured.items():
                    (args.reports / f"round{r}-stages{n}.json").write_text(json.dumps(rep))
            base = measured[1][0]
            for n, (rep, other, tries) in measured.items():
                rows.append({"round": r, **_row(base, rep, n, cluster, other, tries)})
                x = rows[-1]
                print(f"round {r} stages {n}: wall {x['predicted_wall_s']:.3f} s predicted, "
                      f"{x['measured_wall_s']:.3f} s measured ({x['wall_error']:+.1%}); render "
                      f"{x['predicted_render_s']:.3f} / {x['measured_render_s']:.3f} ({x['render_error']:+.1%})")
    summary = []
    for n in STAGES:
        mine = [x for x in rows if x["stages"] == n]
        summary.append({"stages": n, "measured_wall_s": median(x["measured_wall_s"] for x in mine),
                        "median_wall_error": median(x["wall_error"] for x in mine),
                        "median_render_error": median(x["render_error"] for x in mine),
                        "wall_errors": [round(x["wall_error"], 4) for x in mine]})
        s = summary[-1]
        print(f"{n} stages: median wall error {s['median_wall_error']:+.1%}, render {s['median_render_error']:+.1%}")
    # The noise floor: each round's 1-stage run predicted from the previous round's (same job, same code).
    floor = [predict_breakdown(a, 1, cluster)["predicted_wall_s"] / b["wall_s"] - 1 for a, b in zip(solo, solo[1:])]
    if floor:
        print(f"1 stage from the previous round's 1-stage run: median wall error {median(floor):+.1%}")
    result = {"model": args.model, "frames": args.frames, "size": args.size, "steps": args.steps,
              "launcher": "spawn", "threads_per_process": 1, "calibrated_on": "the round's 1-stage run",
              "rounds": args.rounds, "cluster": asdict(cluster), "summary": summary,
              "one_stage_from_previous_round_wall_errors": [round(e, 4) for e in floor], "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
