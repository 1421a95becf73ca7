"""Audio-video sync metrics that need no pretrained model (AUDIO_VIDEO.md section 10).

SyncNet, Synchformer and ImageBind scores are later GPU evaluations; these metrics run anywhere and catch
what the `av` pipeline can break by itself: a constant lag (a wrong lead-in or sample mapping), blocks out
of step (AV-Align) and clicks at block seams (seam ratio).

- Motion envelope: mean absolute grey-level difference between frame t and t-1 (0 for frame 0).
- Onset envelope: spectral flux of a log-magnitude STFT at hop sr/(4F) whose windows end on the hop grid
  (floored at -60 dB of the clip's peak), max-pooled onto frames: window ends in (t/F, (t+1)/F] -> frame t.
- AV-Align (after guyyariv/TempoTokens, frame differences instead of optical flow): onset peaks vs motion
  peaks; a hit is an onset within +-1 frame of a motion peak (one-to-one); score = hits/(onsets+peaks-hits).
- Lag: z-scored envelopes, lag within +-max_lag frames with the largest mean product (positive: audio late),
  its correlation and its margin over the median correlation.
- Seam ratio: flux of the STFT windows holding a block seam over the flux elsewhere (about 1 if clean).

Legend: T frames, H/W pixels, S samples, K STFT frames, F frequency bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

FLOOR_DB = 60.0


def motion_envelope(frames_THW: np.ndarray) -> np.ndarray:
    """Mean absolute difference to the previous frame, [T] float64 (frames grey or RGB, any numeric type)."""
    x = np.asarray(frames_THW, dtype=np.float32)
    if x.ndim == 4:
        x = x.mean(axis=3)
    env = np.zeros(x.shape[0])
    env[1:] = np.abs(np.diff(x, axis=0)).mean(axis=(1, 2))
    return env


def _window_grid(sample_rate: int, fps: Fraction, n_frames: int) -> tuple[np.ndarray, int]:
    """End samples floor(k*sr/(4F)) of STFT windows k = 0 .. 4*n_frames, and the window width
    (the power of two >= two hops)."""
    hop = Fraction(sample_rate) / (4 * Fraction(fps))
    width = 1 << max(4, math.ceil(math.log2(2 * hop)))
    ends = np.array([(k * hop.numerator) // hop.denominator for k in range(4 * n_frames + 1)], dtype=np.int64)
    return ends, width


def spectral_flux(pcm_S: np.ndarray, sample_rate: int, fps: Fraction, n_frames: int) -> np.ndarray:
    """Spectral flux per STFT frame k = 0 .. 4*n_frames, window k ending at sample floor(k*sr/(4F))."""
    pcm = np.asarray(pcm_S, dtype=np.float64)
    ends, width = _window_grid(sample_rate, fps, n_frames)
    padded = np.concatenate([np.zeros(width), pcm, np.zeros(max(0, int(ends[-1]) - len(pcm)))])
    window = np.hanning(width)
    mags = []
    for chunk in np.array_split(ends, max(1, len(ends) // 2048)):
        idx = chunk[:, None] + np.arange(width)[None, :]  # padded index of the window's samples
        mags.append(np.abs(np.fft.rfft(padded[idx] * window, axis=1)))
    mag_KF = np.concatenate(mags)
    floor = max(mag_KF.max(), 1e-12) * 10 ** (-FLOOR_DB / 20)
    log_KF = np.log(np.maximum(mag_KF, floor))
    flux = np.zeros(len(ends))
    flux[1:] = np.maximum(np.diff(log_KF, axis=0), 0).sum(axis=1)
    return flux


def onset_envelope(pcm_S: np.ndarray, sample_rate: int, fps: Fraction, n_frames: int) -> np.ndarray:
    """Spectral flux max-pooled onto video frames, [T]: STFT frames 4t+1 .. 4t+4 belong to frame t."""
    flux = spectral_flux(pcm_S, sample_rate, fps, n_frames)
    return flux[1:].reshape(n_frames, 4).max(axis=1)


def find_peaks(env_T: np.ndarray, rel_threshold: float = 0.5) -> np.ndarray:
    """Local maxima (strictly above the previous frame, not below the next) above rel_threshold * max."""
    env = np.asarray(env_T, dtype=np.float64)
    if env.size == 0 or env.max() <= 0:
        return np.zeros(0, dtype=np.int64)
    prev = np.concatenate([[-np.inf], env[:-1]])
    nxt = np.concatenate([env[1:], [-np.inf]])
    return np.flatnonzero((env > prev) & (env >= nxt) & (env >= rel_threshold * env.max()))


def av_align(onsets: np.ndarray, peaks: np.ndarray, tolerance: int = 1) -> tuple[float, int]:
    """IoU of onsets and motion peaks with one-to-one matches within `tolerance` frames: (score, hits)."""
    free = sorted(int(p) for p in peaks)
    hits = 0
    for t in sorted(int(o) for o in onsets):
        near = [p for p in free if abs(p - t) <= tolerance]
        if near:
            free.remove(min(near, key=lambda p: (abs(p - t), p)))
            hits += 1
    union = len(onsets) + len(peaks) - hits
    return (hits / union if union else 0.0), hits


def _zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def estimate_lag(onset_T: np.ndarray, motion_T: np.ndarray, max_lag: int = 12) -> tuple[int, float, float]:
    """(lag, correlation, margin over the median): the shift of the audio envelope against the motion one."""
    a, m = _zscore(np.asarray(onset_T, float)), _zscore(np.asarray(motion_T, float))
    n = min(len(a), len(m))
    lags = range(-max_lag, max_lag + 1)
    corr = []
    for lag in lags:
        lo, hi = max(0, -lag), min(n, n - lag)
        corr.append(float(np.mean(a[lo + lag:hi + lag] * m[lo:hi])) if hi > lo else 0.0)
    best = int(np.argmax(corr))
    return lags[best], corr[best], corr[best] - float(np.median(corr))


def seam_ratio(pcm_S: np.ndarray, sample_rate: int, fps: Fraction, seams: list[int]) -> float:
    """Median over seams of the largest flux among the STFT windows holding the seam, over the median flux
    of the windows holding none (medians: a real onset that happens to fall on one seam is not a click)."""
    n_frames = int(np.ceil(len(pcm_S) * Fraction(fps) / sample_rate))
    flux = spectral_flux(pcm_S, sample_rate, fps, n_frames)
    ends, width = _window_grid(sample_rate, fps, n_frames)
    rest = np.ones(len(flux), dtype=bool)
    rest[0] = False
    per_seam = []
    for s in seams:
        holds = (ends - width <= s) & (s < ends)
        holds[0] = False
        if holds.any():
            per_seam.append(flux[holds].max())
            rest &= ~holds
    if not per_seam or not rest.any() or np.median(flux[rest]) <= 0:
        return 1.0
    return float(np.median(per_seam) / np.median(flux[rest]))


@dataclass(frozen=True)
class SyncReport:
    """All sync metrics of one clip (JSON-friendly)."""

    frames: int
    av_align: float
    onsets: int
    motion_peaks: int
    hits: int
    lag_frames: int
    lag_corr: float
    lag_margin: float
    seam_ratio: float | None = None


def analyse_envelopes(onset_T: np.ndarray, motion_T: np.ndarray, max_lag: int = 12,
                      seam: float | None = None) -> SyncReport:
    onsets, peaks = find_peaks(onset_T), find_peaks(motion_T)
    score, hits = av_align(onsets, peaks)
    lag, corr, margin = estimate_lag(onset_T, motion_T, max_lag)
    return SyncReport(len(motion_T), score, len(onsets), len(peaks), hits, lag, corr, margin, seam)


def analyse_signals(motion_T: np.ndarray, pcm_S: np.ndarray, sample_rate: int, fps: Fraction,
                    max_lag: int = 12, seams: list[int] | None = None) -> SyncReport:
    """Sync metrics of a motion envelope and mono PCM (sample 0 at frame 0's start)."""
    onset = onset_envelope(pcm_S, sample_rate, fps, len(motion_T))
    seam = seam_ratio(pcm_S, sample_rate, fps, seams) if seams else None
    return analyse_envelopes(onset, motion_T, max_lag, seam)


def analyse(frames_THW: np.ndarray, pcm_S: np.ndarray, sample_rate: int, fps: Fraction,
            max_lag: int = 12, seams: list[int] | None = None) -> SyncReport:
    """Sync metrics of decoded frames and mono PCM."""
    return analyse_signals(motion_envelope(frames_THW), pcm_S, sample_rate, fps, max_lag, seams)
