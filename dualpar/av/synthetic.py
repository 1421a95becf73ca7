"""Flash-and-click clips with known event times: the fixture that validates the sync metrics.

A square flashes on at each event frame (sharp onset, slow fade) and a short tone burst with a sharp attack
starts at the same time, plus `lag_frames`, over faint noise. Event gaps are random (no periodicity that
would alias the lag search) and at least `min_gap` frames, so a shift of two or more frames has no hits
within AV-Align's +-1 frame tolerance. Single-frame onsets: two-frame flashes would double the motion peaks.

Legend: T frames, H/W pixels, S samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class SyntheticClip:
    """Frames, PCM and the ground-truth event frames of one fixture clip."""

    frames_THWC: np.ndarray  # uint8 RGB
    pcm_S: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    fps: Fraction
    video_events: tuple[int, ...]
    audio_events: tuple[int, ...]  # frame index at whose start each burst begins


def event_frames(n_frames: int, seed: int, min_gap: int = 6, max_gap: int = 12, start: int = 4) -> list[int]:
    """Random aperiodic event frames in [start, n_frames - start)."""
    rng = np.random.default_rng(seed)
    events, t = [], start
    while t < n_frames - start:
        events.append(t)
        t += int(rng.integers(min_gap, max_gap + 1))
    return events


def render_frames(n_frames: int, events: list[int], size: int = 32, fade: float = 0.6) -> np.ndarray:
    """Dark frames with a bright square that switches on at each event and fades by `fade` per frame."""
    level = np.zeros(n_frames)
    for t in range(n_frames):
        level[t] = 1.0 if t in events else (level[t - 1] * fade if t else 0.0)
    frames = np.full((n_frames, size, size, 3), 16, dtype=np.float32)
    q = size // 4
    frames[:, q:size - q, q:size - q, :] += 224 * level[:, None, None, None]
    return np.clip(frames, 0, 255).astype(np.uint8)


def render_audio(n_frames: int, events: list[int], sample_rate: int, fps: Fraction, seed: int = 0,
                 freq: float = 1000.0, burst_s: float = 0.05, noise: float = 1e-3) -> np.ndarray:
    """Tone bursts (sharp attack, exponential decay) starting at event frame times, over faint noise."""
    total = math.ceil(Fraction(n_frames * sample_rate) / Fraction(fps))
    pcm = noise * np.random.default_rng(seed).standard_normal(total)
    n = int(burst_s * sample_rate)
    t = np.arange(n) / sample_rate
    burst = 0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t / (burst_s / 4))
    for e in events:
        s0 = math.ceil(Fraction(e * sample_rate) / Fraction(fps))
        if 0 <= s0 < total:
            seg = burst[:total - s0]
            pcm[s0:s0 + len(seg)] += seg
    return np.clip(pcm, -1, 1).astype(np.float32)


def synthetic_clip(n_frames: int = 160, fps: Fraction = Fraction(16), sample_rate: int = 16000,
                   lag_frames: int = 0, shuffled: bool = False, seed: int = 0, size: int = 32) -> SyntheticClip:
    """A clip whose audio events are the video events shifted by `lag_frames` (or independent if shuffled)."""
    video = event_frames(n_frames, seed)
    audio = event_frames(n_frames, seed + 1000) if shuffled else [e + lag_frames for e in video]
    audio = [e for e in audio if 0 <= e < n_frames]
    return SyntheticClip(render_frames(n_frames, video, size), render_audio(n_frames, audio, sample_rate, fps, seed),
                         sample_rate, Fraction(fps), tuple(video), tuple(audio))
