"""Long-video ablations with the shipped toy world model, scored by dualpar.metrics (no pretrained network).

Variants: the default job, feature cache off, coordinated noise off, left_context=same, C in {0, P/2, P},
and a prompt timeline with a colour change mid-video. Each renders --frames frames (1,000+), is scored, and
contributes one row of frames to a strip image. Writes docs/results/quality.{json,md} and quality_strips.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dualpar.metrics import evaluate
from dualpar.sinks.probe import read_frames

PROMPT = "a red ball moving right"
SWITCH = "a blue ball moving right"


def variants(frames: int) -> dict[str, list[str]]:
    mid = frames // 2
    return {
        "default (cache, coordinated noise, ahead, C=2)": [],
        "feature cache off": ["schedule.feature_cache=false"],
        "coordinated noise off": ["schedule.coordinated_noise=false"],
        "left_context=same": ["schedule.left_context=same"],
        "C=0": ["schedule.context_latents=0"],
        "C=P=4": ["schedule.context_latents=4"],
        f"timeline: red -> blue at frame {mid}": [
            f"prompt=[{{frame:0,text:'{PROMPT}'}},{{frame:{mid},text:'{SWITCH}'}}]"
        ],
    }


def _launch(out: Path, frames: int, seed: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dualpar.cli", "model=toyworld", f"frames={frames}", f"seed={seed}",
           f"prompt='{PROMPT}'", f"output.dir={out}", "output.overwrite=true", "output.progress=false",
           "parallel.threads=1", *extra]
    return subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _render_all(root: Path, frames: int, seed: int, jobs: int) -> dict[str, Path]:
    todo = list(variants(frames).items())
    dirs = {name: root / f"v{i}" for i, (name, _) in enumerate(todo)}
    running: list[tuple[str, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < jobs:
            name, extra = todo.pop(0)
            running.append((name, _launch(dirs[name], frames, seed, extra)))
        name, proc = running.pop(0)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed: {err[-2000:]}")
    return dirs


def _strip(rows: list[tuple[str, np.ndarray]], picks: list[int], path: Path, cell: int = 64) -> None:
    label_w = 330
    img = Image.new("RGB", (label_w + cell * len(picks), cell * len(rows) + 18), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for j, f in enumerate(picks):
        draw.text((label_w + j * cell + 2, 2), f"#{f}", fill=(0, 0, 0))
    for i, (name, frames) in enumerate(rows):
        y = 18 + i * cell
        draw.text((4, y + cell // 2 - 6), name, fill=(0, 0, 0))
        for j, f in enumerate(picks):
            tile = Image.fromarray(frames[f]).resize((cell, cell), Image.NEAREST)
            img.paste(tile, (label_w + j * cell, y))
    img.save(path)


KEYS = ["boundary_flicker", "boundary_centroid_step", "inside_centroid_step", "persistence", "caption_colour_rate",
        "jump_rate", "vanish_rate", "median_displacement", "blobs_per_frame", "colour_drift", "size_drift"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="renders at once (one thread each)")
    parser.add_argument("--work", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    dirs = _render_all(args.work, args.frames, args.seed, args.jobs)
    results, rows = {}, []
    for name, d in dirs.items():
        report = json.loads((d / "report.json").read_text())
        frames = read_frames(d / "video.mp4")
        timeline = name.startswith("timeline")
        res = evaluate(frames, report["block_frame_starts"], prompt=None if timeline else PROMPT).to_json()
        res.pop("block_frame_starts")
        res["render_s"] = report["phases"]["render_s"]
        if timeline:
            half = len(frames) // 2
            res["first_half"] = evaluate(frames[:half], prompt=PROMPT).to_json()["persistence"]
            res["second_half"] = evaluate(frames[half:], prompt=SWITCH).to_json()["persistence"]
        results[name] = res
        rows.append((name, frames))
    picks = [int(i) for i in np.linspace(0, args.frames - 1, 12)]
    args.out.mkdir(parents=True, exist_ok=True)
    _strip(rows, picks, args.out / "quality_strips.png")
    (args.out / "quality.json").write_text(json.dumps({"frames": args.frames, "seed": args.seed, "prompt": PROMPT,
                                                        "variants": results}, indent=2))
    lines = [f"# Long-video ablations ({args.frames} frames, toyworld, seed {args.seed}, prompt '{PROMPT}')", "",
             "Produced by `python tools/ablations.py`; metrics from `dualpar.metrics` (see tools/quality.py).", "",
             "| variant | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    for name, res in results.items():
        cells = [f"{res[k]:.3f}" if isinstance(res[k], float) else str(res[k]) for k in KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tl = next(v for k, v in results.items() if k.startswith("timeline"))
    lines += ["", f"Timeline: persistence of the red prompt in the first half {tl['first_half']:.3f}, of the blue "
              f"prompt in the second half {tl['second_half']:.3f}.", "", "![strips](quality_strips.png)", ""]
    (args.out / "quality.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
