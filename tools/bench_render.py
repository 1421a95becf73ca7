"""Render time and peak RSS against video length (8, 32, 128 blocks) with the tiny model, each in a fresh process.

Writes docs/results/render_scaling.json (or --out). Peak RSS should stay flat: nothing keeps all frames.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from dualpar.testing.jobs import render
t0 = time.time()
rep = render(sys.argv[1], sys.argv[2:])
print(json.dumps({"wall_s": time.time() - t0, "phases": rep["phases"], "peak_rss_bytes": rep["peak_rss_bytes"],
                  "blocks": rep["blocks"], "frames": rep["frames_written"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("docs/results/render_scaling.json"))
    args = parser.parse_args()
    rows = []
    for n in args.blocks:
        frames = 4 * (2 * n) + 1  # tiny: P=2, C=1 -> n blocks own 2n+1 latents = 8n+1 frames
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-c", CHILD, tmp, "model=tiny", f"frames={frames}", f"schedule.steps={args.steps}"]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["frames_per_s"] = row["frames"] / row["phases"]["render_s"]
        rows.append(row)
        print(json.dumps(row))
    result = {"model": "tiny", "size": "64x64", "steps": args.steps, "threads": 1, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
