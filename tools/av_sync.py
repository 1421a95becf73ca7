"""Audio-video sync check of an mp4 (or a synthetic self-check) without pretrained models.

    python tools/av_sync.py --video out/video.mp4 --out sync.json [--blocks 10,5] [--max-lag 12]
    python tools/av_sync.py --synthetic --out selfcheck.json

Reports AV-Align (audio onsets vs motion peaks), the lag (frames, positive = audio late) with its correlation
and margin, and with --blocks P,C the seam ratio at the job's block boundaries (about 1 when seams are clean).
`--synthetic` validates the metrics on flash-and-click clips with known lags and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dualpar.av.sync import SyncReport, analyse, analyse_signals  # noqa: E402
from dualpar.av.synthetic import synthetic_clip  # noqa: E402
from dualpar.av.timegrid import TimeGrid  # noqa: E402
from dualpar.schedule.blockwise import BlockGeometry, blocks_for_latents  # noqa: E402


def block_seams(fps: Fraction, sample_rate: int, frames: int, blocks: str, stride: int = 4) -> list[int]:
    """Output-sample boundaries between the job's frame blocks (P,C as in schedule.block/context_latents)."""
    p, c = (int(v) for v in blocks.split(","))
    grid = TimeGrid(fps, sample_rate, hop=1, stride=stride)
    geo = BlockGeometry(p, c, blocks_for_latents(1 + math.ceil((frames - 1) / stride), p, c))
    return [grid.block_samples(k, geo, frames)[0] for k in range(1, geo.n_blocks)]


def check_video(path: str, max_lag: int, blocks: str | None) -> dict:
    from dualpar.av.avio import read_clip

    clip = read_clip(path)
    seams = block_seams(clip.fps, clip.sample_rate, len(clip.motion_T), blocks) if blocks else None
    report = analyse_signals(clip.motion_T, clip.pcm_S, clip.sample_rate, clip.fps, max_lag, seams)
    return {"video": str(path), "fps": str(clip.fps), "sample_rate": clip.sample_rate,
            **dataclasses.asdict(report)}


def synthetic_cases() -> list[tuple[str, dict, object]]:
    """(name, clip arguments, predicate on the report)."""
    def synced(r: SyncReport) -> bool:
        return r.av_align == 1.0 and r.lag_frames == 0

    def lagged(k: int):
        return lambda r: r.av_align == 0.0 and abs(r.lag_frames - k) <= 1

    return [
        ("synced_16fps", {}, synced),
        ("synced_ntsc_44k", {"fps": Fraction(30000, 1001), "sample_rate": 44100}, synced),
        ("audio_late_3", {"lag_frames": 3}, lagged(3)),
        ("audio_early_2", {"lag_frames": -2, "fps": Fraction(24), "sample_rate": 48000}, lagged(-2)),
        ("shuffled", {"shuffled": True}, lambda r: r.av_align < 0.5),
    ]


def self_check() -> dict:
    results = {}
    for name, kwargs, ok in synthetic_cases():
        clip = synthetic_clip(**kwargs)
        report = analyse(clip.frames_THWC, clip.pcm_S, clip.sample_rate, clip.fps)
        results[name] = {"args": {k: str(v) for k, v in kwargs.items()}, "passed": bool(ok(report)),
                         **dataclasses.asdict(report)}
    return {"passed": all(r["passed"] for r in results.values()), "cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="mp4 (or any container PyAV reads) with video and audio")
    src.add_argument("--synthetic", action="store_true", help="validate the metrics on synthetic clips")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--max-lag", type=int, default=12, help="lag search range in frames")
    parser.add_argument("--blocks", help="P,C of the job, for the seam ratio at block boundaries")
    args = parser.parse_args(argv)
    result = self_check() if args.synthetic else check_video(args.video, args.max_lag, args.blocks)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result if args.video else {"passed": result["passed"]}, indent=2))
    return 0 if result.get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
