"""Read an mp4's frames and soundtrack for the sync metrics, with memory independent of the video's length.

The motion envelope is accumulated while frames are decoded (only the previous grey frame is kept); audio is
downmixed to mono float32 and placed by its timestamps, so a stream that starts late or carries encoder
priming lines up with the frames the way a player shows it. PyAV is imported only here.

Legend: T frames, H/W pixels, S samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ClipSignals:
    """What the sync metrics need from a file."""

    fps: Fraction
    motion_T: np.ndarray
    pcm_S: np.ndarray  # mono float32, sample 0 at time 0
    sample_rate: int


def _motion(path: Path) -> tuple[Fraction, np.ndarray]:
    import av

    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        fps = Fraction(stream.average_rate or stream.guessed_rate)
        env, prev = [], None
        for frame in box.decode(stream):
            grey = frame.to_ndarray(format="gray").astype(np.float32)
            env.append(0.0 if prev is None else float(np.abs(grey - prev).mean()))
            prev = grey
    return fps, np.asarray(env)


def _audio(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(path)) as box:
        if not box.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = box.streams.audio[0]
        sr = int(sample_rate or stream.rate)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sr)
        pieces: list[tuple[int | None, np.ndarray]] = []
        for frame in box.decode(stream):
            for out in resampler.resample(frame):
                pieces.append((_start(out), out.to_ndarray()[0]))
        for out in resampler.resample(None):
            pieces.append((_start(out), out.to_ndarray()[0]))
    return _assemble(pieces), sr


def _start(frame) -> int | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return math.floor(frame.pts * Fraction(frame.time_base) * frame.sample_rate)


def _assemble(pieces: list[tuple[int | None, np.ndarray]]) -> np.ndarray:
    """Place pieces at their start samples (sequentially when a timestamp is missing); drop t < 0."""
    placed, pos = [], 0
    for start, data in pieces:
        start = pos if start is None else start
        placed.append((start, data))
        pos = start + len(data)
    total = max((s + len(d) for s, d in placed), default=0)
    pcm = np.zeros(max(total, 0), dtype=np.float32)
    for start, data in placed:
        lo = max(start, 0)
        if start + len(data) > lo:
            pcm[lo:start + len(data)] = data[lo - start:]
    return pcm


def read_clip(path: str | Path, sample_rate: int | None = None) -> ClipSignals:
    """Frame-difference envelope, frame rate and mono PCM of a video file with an audio track."""
    fps, motion = _motion(Path(path))
    pcm, sr = _audio(Path(path), sample_rate)
    return ClipSignals(fps, motion, pcm, sr)
