"""Read back what the sinks wrote: decoded frame and sample counts, durations, and frames as arrays.

Container metadata can disagree with what a player shows (edit lists, missing frame counts), so `probe_video`
decodes every packet and counts; it streams, holding one frame at a time. `read_frames` returns a window of
decoded RGB frames for tests and quality tools.

Legend: F = frames, H = height, W = width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What decoding a file yields. AAC decodes up to one frame (1024 samples) of padding past the input."""

    frames: int
    fps: Fraction
    width: int
    height: int
    duration_s: float
    audio_samples: int | None = None
    audio_rate: int | None = None
    audio_duration_s: float | None = None


def _stream_duration_s(stream: av.stream.Stream) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def probe_video(path: Path | str) -> VideoInfo:
    """Decode the first video stream (and first audio stream, if any) of `path` and count what comes out."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = samples = 0
        for frame in container.decode(video=0, **({"audio": 0} if audio is not None else {})):
            if isinstance(frame, av.AudioFrame):
                samples += frame.samples
            else:
                frames += 1
        fps = Fraction(video.average_rate or video.guessed_rate or 0)
        duration_s = _stream_duration_s(video)
        if duration_s is None:
            duration_s = float(frames / fps) if fps else 0.0
        info = VideoInfo(frames, fps, video.codec_context.width, video.codec_context.height, duration_s)
        if audio is None:
            return info
        rate = audio.codec_context.sample_rate
        audio_duration_s = _stream_duration_s(audio)
        if audio_duration_s is None:
            audio_duration_s = samples / rate
    return replace(info, audio_samples=samples, audio_rate=rate, audio_duration_s=audio_duration_s)


def read_frames(path: Path | str, start: int = 0, count: int | None = None) -> np.ndarray:
    """Decoded frames [start, start + count) of the first video stream as uint8 [F, H, W, 3] RGB."""
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0 or None, got {count}")
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        shape = (0, video.codec_context.height, video.codec_context.width, 3)
        for index, frame in enumerate(container.decode(video=0)):
            if count is not None and len(frames) >= count:
                break
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames) if frames else np.zeros(shape, np.uint8)
