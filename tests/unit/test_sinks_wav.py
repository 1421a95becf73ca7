"""WavWriter / iter_wav: streamed WAV files round-trip and read back with the standard library."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from dualpar.sinks.wav import WavWriter, iter_wav, read_wav_info


def test_float_and_int16_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    audio_CS = (rng.uniform(-1, 1, (2, 5000))).astype(np.float32)
    for fmt in ("f32", "s16"):
        path = tmp_path / f"{fmt}.wav"
        with WavWriter(path, 22050, 2, fmt) as writer:
            writer.write(audio_CS[:, :1234])
            assert not path.exists()
            writer.write(audio_CS[:, 1234:])
        info = read_wav_info(path)
        assert (info.sample_rate, info.channels, info.samples) == (22050, 2, 5000)
        back_CS = np.concatenate(list(iter_wav(path, chunk_samples=777)), axis=1)
        atol = 0 if fmt == "f32" else 1 / 32767 + 1e-7
        np.testing.assert_allclose(back_CS, audio_CS, atol=atol)
    with wave.open(str(tmp_path / "s16.wav")) as w:
        assert (w.getnframes(), w.getnchannels(), w.getframerate(), w.getsampwidth()) == (5000, 2, 22050, 2)


def test_errors_and_abort(tmp_path):
    writer = WavWriter(tmp_path / "a.wav", 16000, 1)
    with pytest.raises(ValueError, match="transpose"):
        writer.write(np.zeros((10, 1), np.float32))
    with pytest.raises(ValueError, match="float"):
        writer.write(np.zeros((1, 10), np.int16))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
