"""Sync metrics on flash-and-click clips with known lags, in memory and through the real mp4 sink."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dualpar.av.sync import analyse, av_align, estimate_lag, seam_ratio
from dualpar.av.synthetic import synthetic_clip

TOOL = Path(__file__).resolve().parents[2] / "tools" / "av_sync.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("av_sync_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fps,sr", [(Fraction(16), 16000), (Fraction(30000, 1001), 44100), (Fraction(24), 48000)])
@pytest.mark.parametrize("lag", [0, 1, 3, -4])
def test_lag_recovered_and_align_score(fps, sr, lag):
    clip = synthetic_clip(n_frames=120, fps=fps, sample_rate=sr, lag_frames=lag, seed=lag + 7)
    report = analyse(clip.frames_THWC, clip.pcm_S, sr, fps)
    assert abs(report.lag_frames - lag) <= 1 and report.lag_frames == lag
    assert report.lag_margin > 0.5
    if lag == 0:
        assert report.av_align == 1.0 and report.hits == len(clip.video_events)
    if abs(lag) >= 2:
        assert report.av_align == 0.0


def test_shuffled_scores_low():
    scores = []
    for seed in range(3):
        clip = synthetic_clip(n_frames=160, shuffled=True, seed=seed)
        scores.append(analyse(clip.frames_THWC, clip.pcm_S, clip.sample_rate, clip.fps).av_align)
    assert max(scores) < 0.5


def test_align_and_lag_primitives():
    assert av_align(np.array([3, 10, 20]), np.array([4, 10, 30])) == (0.5, 2)
    assert av_align(np.array([]), np.array([]))[0] == 0.0
    m = np.zeros(60)
    m[[5, 13, 30, 41]] = 1.0
    assert estimate_lag(np.roll(m, 2), m)[0] == 2


def test_seam_ratio_flags_clicks_at_block_boundaries():
    rng = np.random.default_rng(0)
    sr, fps = 16000, Fraction(16)
    t = np.arange(sr * 6) / sr
    seams = [int(sr * 0.75 * k) for k in range(1, 8)]
    phase = np.zeros_like(t)
    for s in seams:
        phase[s:] += np.pi / 2  # a waveform discontinuity at every seam: an audible click
    noise = 0.01 * rng.standard_normal(len(t))
    clean = seam_ratio(0.5 * np.sin(2 * np.pi * 440 * t) + noise, sr, fps, seams)
    clicky = seam_ratio(0.5 * np.sin(2 * np.pi * 440 * t + phase) + noise, sr, fps, seams)
    assert 0.7 < clean < 1.4
    assert clicky > 3.0


def test_cli_synthetic_self_check(tmp_path):
    tool = load_tool()
    out = tmp_path / "selfcheck.json"
    assert tool.main(["--synthetic", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["passed"] and result["cases"]["audio_late_3"]["lag_frames"] == 3


@pytest.mark.parametrize("lag", [0, 2])
def test_mp4_round_trip_through_sink(tmp_path, lag):
    mp4 = pytest.importorskip("dualpar.sinks.mp4")
    clip = synthetic_clip(n_frames=96, lag_frames=lag, seed=3)
    sink = mp4.Mp4SegmentSink(tmp_path / "out", clip.fps, 32, 32, total_frames=96,
                              audio=mp4.AudioSpec(clip.sample_rate, 1), preset="ultrafast")
    per_block, samples_per_frame = 24, clip.sample_rate // 16
    for k in range(4):
        f0, f1 = k * per_block, (k + 1) * per_block
        pcm = clip.pcm_S[f0 * samples_per_frame:f1 * samples_per_frame][None]
        sink.write_block(k, clip.frames_THWC[f0:f1], pcm)
    path = sink.close()
    tool = load_tool()
    out = tmp_path / "sync.json"
    assert tool.main(["--video", str(path), "--out", str(out), "--blocks", "6,0"]) == 0
    result = json.loads(out.read_text())
    assert result["lag_frames"] == lag and result["fps"] == "16"
    assert result["av_align"] == (1.0 if lag == 0 else 0.0)
    assert result["seam_ratio"] is not None and result["seam_ratio"] < 2.0
