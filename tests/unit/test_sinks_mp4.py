"""Mp4SegmentSink: exact frame counts after the remux, frame order across crashes, audio durations."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from dualpar.sinks.mp4 import AudioSpec, Mp4SegmentSink
from dualpar.sinks.probe import probe_video, read_frames
from dualpar.sinks.wav import iter_wav, read_wav_info

H, W = 48, 64


def level(index: int) -> int:
    return 20 + 3 * index  # distinct flat gray levels: the top rows of a frame encode its index


def make_frames(start: int, count: int) -> np.ndarray:
    """Top half flat gray (the frame index), bottom half a smooth gradient that drifts with the index."""
    frames_FHWC = np.empty((count, H, W, 3), np.uint8)
    x = np.arange(W)[None, :, None]
    for k in range(count):
        i = start + k
        frames_FHWC[k, : H // 2] = level(i)
        frames_FHWC[k, H // 2 :] = (40 + 2.5 * x + 3 * i).clip(0, 255).astype(np.uint8)
    return frames_FHWC


def decoded_indices(frames_FHWC: np.ndarray) -> list[int]:
    top = frames_FHWC[:, 4 : H // 2 - 4, 4:-4].reshape(len(frames_FHWC), -1).mean(axis=1)
    return [int(round((m - 20) / 3)) for m in top]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def sine(start: int, count: int, rate: int, channels: int) -> np.ndarray:
    t = np.arange(start, start + count) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def test_many_blocks_remux_exact_frames_order_and_quality(tmp_path):
    total, block = 50, 7  # 8 blocks = 56 frames: the last is trimmed, a ninth block keeps nothing
    sink = Mp4SegmentSink(tmp_path, fps=16, width=W, height=H, total_frames=total, preset="veryfast")
    for b in range(9):
        sink.write_block(b, make_frames(b * block, block))
    assert (sink.blocks_written, sink.frames_written) == (9, total)
    assert len(sink.state()["segments"]) == 8
    out = sink.close()

    assert out == tmp_path / "video.mp4" and not (tmp_path / "video.parts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]
    info = probe_video(out)
    assert (info.frames, info.width, info.height, info.fps) == (total, W, H, Fraction(16))
    assert info.duration_s == pytest.approx(total / 16, abs=1e-6)
    assert info.audio_samples is None
    decoded = read_frames(out)
    assert decoded.shape == (total, H, W, 3)
    assert decoded_indices(decoded) == list(range(total))
    reference = make_frames(0, total)
    assert min(psnr(d, r) for d, r in zip(decoded, reference)) > 30
    assert read_frames(out, start=45, count=3).shape[0] == 3
    assert decoded_indices(read_frames(out, start=45, count=3)) == [45, 46, 47]


def test_crash_after_checkpoint_then_resume_has_no_duplicates(tmp_path):
    spec = AudioSpec(sample_rate=16000, channels=2)  # 1000 samples per frame at 16 fps
    kwargs = dict(fps=16, width=W, height=H, total_frames=30, audio=spec, write_wav=True, preset="veryfast")
    sink = Mp4SegmentSink(tmp_path, **kwargs)
    sizes, handed = [6, 6, 6, 6, 6], 0
    state_after_2 = None
    for b in range(3):
        start = sum(sizes[:b])
        sink.write_block(b, make_frames(start, sizes[b]), sine(start * 1000, sizes[b] * 1000, 16000, 2))
        if b == 1:
            state_after_2 = json.loads(json.dumps(sink.state()))  # what a checkpoint stores
    parts = tmp_path / "video.parts"
    for b in range(3):  # the "crash": no close(); every finished block is a playable file
        assert decoded_indices(read_frames(parts / f"{b:06d}.mp4")) == list(range(6 * b, 6 * b + 6))
        assert read_wav_info(parts / f"{b:06d}.wav").samples == 6000
    (parts / "000003.mp4.tmp").write_bytes(b"half a segment")
    del sink

    with pytest.raises(ValueError, match="total_frames"):
        Mp4SegmentSink.resume(tmp_path, state_after_2, total_frames=31)
    sink = Mp4SegmentSink.resume(tmp_path, state_after_2, total_frames=30, fps=Fraction(16))
    assert sorted(p.name for p in parts.iterdir()) == ["000000.mp4", "000000.wav", "000001.mp4", "000001.wav"]
    assert (sink.blocks_written, sink.frames_written, sink.samples_written) == (2, 12, 12000)
    with pytest.raises(ValueError, match="block_index must be 2"):
        sink.write_block(3, make_frames(18, 6), sine(18000, 6000, 16000, 2))
    for b in range(2, 5):
        start = sum(sizes[:b])
        sink.write_block(b, make_frames(start, sizes[b]), sine(start * 1000, sizes[b] * 1000, 16000, 2))
        handed += sizes[b] * 1000
    out = sink.close()

    decoded = read_frames(out)
    assert decoded_indices(decoded) == list(range(30))
    info = probe_video(out)
    assert info.frames == 30 and info.audio_rate == 16000
    assert 0 <= info.audio_samples - 30000 < 1024  # AAC pads its last frame
    wav = np.concatenate(list(iter_wav(tmp_path / "audio.wav")), axis=1)
    assert wav.shape == (2, 30000)
    np.testing.assert_allclose(wav, sine(0, 30000, 16000, 2), atol=1 / 32767 + 1e-6)


def test_audio_track_durations_and_trimming(tmp_path):
    rate, fps, total = 44100, 24, 40  # 1837.5 samples per frame: blocks carry uneven sample counts
    sink = Mp4SegmentSink(
        tmp_path, fps=fps, width=W, height=H, total_frames=total, audio=AudioSpec(rate, 1), preset="veryfast"
    )
    frames_done = samples_done = 0
    for b, count in enumerate([9, 12, 12, 12]):  # 45 frames handed in: 5 beyond total_frames
        end_samples = round((frames_done + count) * rate / fps)
        sink.write_block(
            b, make_frames(frames_done, count), sine(samples_done, end_samples - samples_done, rate, 1)
        )
        frames_done, samples_done = frames_done + count, end_samples
    assert sink.frames_written == total
    assert sink.samples_written == sink.target_samples == round(total * rate / fps) == 73500
    out = sink.close()

    info = probe_video(out)
    assert info.frames == total
    assert info.duration_s == pytest.approx(total / fps, abs=1e-6)
    assert abs(info.audio_duration_s - info.duration_s) < 1 / fps
    assert abs(info.audio_samples / rate - total / fps) < 1 / fps
    assert 0 <= info.audio_samples - 73500 < 1024


def test_audio_is_one_continuous_tone(tmp_path):
    rate = 16000
    sink = Mp4SegmentSink(
        tmp_path, fps=16, width=32, height=32, total_frames=32, audio=AudioSpec(rate, 1), preset="veryfast"
    )
    black = np.zeros((8, 32, 32, 3), np.uint8)
    for b in range(4):
        sink.write_block(b, black, sine(b * 8000, 8000, rate, 1))
    out = sink.close()
    import av

    with av.open(str(out)) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(pcm[2048:30000]))
    assert abs(np.argmax(spectrum) * rate / len(pcm[2048:30000]) - 440) < 5
    # No click at the block joins: the decoded wave stays close to the reference sine, shifted by the priming.
    reference = sine(0, 32000, rate, 1)[0]
    assert np.max(np.abs(pcm[4000:28000] - reference[4000:28000])) < 0.05


def test_rejects_bad_input_with_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="even"):
        Mp4SegmentSink(tmp_path, fps=16, width=33, height=32, total_frames=4)
    with pytest.raises(ValueError, match="write_wav"):
        Mp4SegmentSink(tmp_path, fps=16, width=32, height=32, total_frames=4, write_wav=True)
    with pytest.raises(ValueError, match="sample_rate"):
        AudioSpec(sample_rate=12345, channels=1)
    sink = Mp4SegmentSink(tmp_path, fps=16, width=32, height=32, total_frames=4)
    with pytest.raises(ValueError, match="uint8"):
        sink.write_block(0, np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \[F, 32, 32, 3\]"):
        sink.write_block(0, np.zeros((2, 32, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="audio"):
        sink.write_block(0, np.zeros((2, 32, 32, 3), np.uint8), np.zeros((1, 10), np.float32))
    sink.write_block(0, np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="allow_partial"):
        sink.close()
    out = sink.close(allow_partial=True)
    assert probe_video(out).frames == 2
    with pytest.raises(RuntimeError, match="after close"):
        sink.write_block(1, np.zeros((2, 32, 32, 3), np.uint8))
