"""What the soundtrack costs: the same job as `video` and as `av`, on 1 and N stages, on this machine.

For each it records the render phase (and its denoise and decode parts: stage 0 decodes the video between
passes, which no stage count speeds up), the per-stage busy fraction, the bytes of one hidden-state message, the
parameter bytes per stage, peak RSS, and for the av job the samples written against the exact track length and
the mp4's audio/video duration difference. The audio share of the compute depends on the ratio of audio
tokens (A per latent frame) to video tokens per latent frame: at Wan 480p (1,560 tokens per latent frame,
A = 8) it is about 0.5%; the `small` preset at 128x128 has 64 tokens per latent frame, so the audio tower is a
far larger share here than on a real model. Writes docs/results/bench_av.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import av

from dualpar.cli import prepare
from dualpar.testing.jobs import compose
from dualpar.testing.multi import spawn_jobs


def _job(out: Path, args, stages: int, kind: str) -> list[str]:
    job = [f"model={args.model}", f"frames={args.frames}", f"height={args.size}", f"width={args.size}",
           f"schedule.steps={args.steps}", "output.progress=false", "output.preview=false", "parallel.threads=1",
           f"parallel.stages={stages}", "launcher=spawn", f"output.dir={out}"]
    return [*job, "job=av"] if kind == "av" else job


def _durations(path: Path) -> dict:
    with av.open(str(path)) as box:
        v, a = box.streams.video[0], box.streams.audio[0]
        return {"video_s": float(v.duration * v.time_base), "audio_s": float(a.duration * a.time_base)}


def _row(report: dict, out: Path) -> dict:
    row = {"render_s": report["phases"]["render_s"], "denoise_s": report["phases"]["denoise_s"],
           "decode_s": report["phases"]["decode_s"], "wall_s": report["wall_s"],
           "busy_fraction": [s["busy_fraction"] for s in report["stages"]],
           "param_bytes": [s["param_bytes"] for s in report["stages"]],
           "peak_rss_bytes": [s["peak_rss_bytes"] for s in report["stages"]],
           "hidden_message_bytes": report["plan"]["hidden_bytes"]}
    if "audio" in report:
        row["audio"] = report["audio"] | _durations(out / "video.mp4")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="small")
    parser.add_argument("--frames", type=int, default=97)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/results/bench_av.json"))
    args = parser.parse_args()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stages in (1, args.stages):
            for kind in ("video", "av"):
                out = Path(tmp) / f"{kind}-{stages}"
                report = spawn_jobs([prepare(compose(_job(out, args, stages, kind)))[0]])[0]
                runs[f"{kind}/{stages}"] = _row(report, out)
                print(kind, stages, json.dumps(runs[f"{kind}/{stages}"]["render_s"]))
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine()},
        "job": {"model": args.model, "frames": args.frames, "size": args.size, "steps": args.steps,
                "audio": "tiny codec, 16 kHz, hop 500, A = 8, width x1.0, fusion every layer"},
        "threads_per_process": 1,
        "runs": runs,
        "av_over_video_render": {str(s): runs[f"av/{s}"]["render_s"] / runs[f"video/{s}"]["render_s"]
                                 for s in (1, args.stages)},
        "av_over_video_denoise": {str(s): runs[f"av/{s}"]["denoise_s"] / runs[f"video/{s}"]["denoise_s"]
                                  for s in (1, args.stages)},
        "pipeline_speedup_render": {kind: runs[f"{kind}/1"]["render_s"] / runs[f"{kind}/{args.stages}"]["render_s"]
                                    for kind in ("video", "av")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    keys = ("av_over_video_render", "av_over_video_denoise", "pipeline_speedup_render")
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
