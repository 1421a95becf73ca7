"""Calibrate the simulator on a measured 1-stage CPU run, predict 1-, 2- and 3-stage runs, then measure them.

Writes docs/results/calibration.json (or --out): predicted and measured wall and render times and the error.
Run it on an otherwise idle machine: with N processes on N cores, other load shows up as prediction error.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from dualpar.cli import prepare
from dualpar.sim.calibrate import predict_breakdown
from dualpar.testing.jobs import compose
from dualpar.testing.multi import spawn_jobs


def _job(out: Path, args, stages: int) -> list[str]:
    return [f"model={args.model}", f"frames={args.frames}", f"height={args.size}", f"width={args.size}",
            f"schedule.steps={args.steps}", "output.video=false", "output.latents=true", "output.progress=false",
            "parallel.threads=1", f"parallel.stages={stages}", "launcher=spawn", f"output.dir={out / str(stages)}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="small")
    parser.add_argument("--frames", type=int, default=73)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("docs/results/calibration.json"))
    args = parser.parse_args()
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stages in (1, 2, 3):
            measured[stages] = spawn_jobs([prepare(compose(_job(Path(tmp), args, stages)))[0]])[0]
    base = measured[1]
    rows = []
    for stages, rep in measured.items():
        pred = predict_breakdown(base, stages)
        row = {"stages": stages, "predicted_wall_s": pred["predicted_wall_s"], "measured_wall_s": rep["wall_s"],
               "predicted_render_s": pred["predicted_denoise_decode_s"], "measured_render_s": rep["phases"]["render_s"]}
        row["wall_error"] = row["predicted_wall_s"] / row["measured_wall_s"] - 1
        row["render_error"] = row["predicted_render_s"] / row["measured_render_s"] - 1
        rows.append(row)
        print(json.dumps(row))
    result = {"model": args.model, "frames": args.frames, "size": args.size, "steps": args.steps,
              "calibrated_on": "1-stage run", "threads_per_process": 1, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
