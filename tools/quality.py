"""Score a rendered long video with network-free metrics (boundary flicker, persistence, motion, drift).

Usage:
  python tools/quality.py --video out.mp4 [--report report.json] [--prompt "a red ball moving right"] \
      --out result.json

Block boundaries come from the engine's report (`"block_frame_starts"`: list of frame indices where a new
block starts); the prompt from --prompt or the report's `"prompt"` key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dualpar.metrics import evaluate  # noqa: E402


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as uint8 [F, H, W, 3] (PyAV)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


def write_video(path: str | Path, frames_FHW3: np.ndarray, fps: int = 8) -> None:
    """Write uint8 frames as a near-lossless H.264 mp4 (used by tests and demos)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames_FHW3.shape[1:3]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        for frame in frames_FHW3:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True)
    p.add_argument("--report", default="", help="engine report.json with block_frame_starts (and prompt)")
    p.add_argument("--prompt", default="")
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--min-pixels", type=int, default=6)
    p.add_argument("--drift-window", type=int, default=100)
    p.add_argument("--out", default="", help="result JSON path (printed if omitted)")
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text()) if args.report else {}
    prompt = args.prompt or report.get("prompt", "")
    frames = read_video(args.video)
    result = evaluate(frames, report.get("block_frame_starts"), prompt or None, threshold=args.threshold,
                      min_pixels=args.min_pixels, drift_window=args.drift_window).to_json()
    result.update({"video": str(args.video), "prompt": prompt})
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return result


if __name__ == "__main__":
    main()
