"""Streaming WAV files: written sample block by sample block, read back in bounded chunks.

Audio for a long video arrives block by block and must never be held whole. `WavWriter` writes the header
with placeholder sizes, appends samples as they come and patches the sizes at `close()`; the file lives at
`path + ".tmp"` until then, so a half-written WAV never sits at the final path. `iter_wav` reads any file this
module writes (and ordinary 16-bit PCM / 32-bit float WAVs) in chunks, so memory stays flat either way.

Legend: C = audio channels, S = samples per channel.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

SampleFormat = Literal["f32", "s16"]

_FORMAT_TAG = {"s16": 1, "f32": 3}  # WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT
_BYTES = {"s16": 2, "f32": 4}
_DTYPE = {"s16": np.dtype("<i2"), "f32": np.dtype("<f4")}
_MAX_RIFF = 2**32 - 1


@dataclass(frozen=True)
class WavInfo:
    """Layout of a WAV file's sample data, enough to stream it back."""

    sample_rate: int
    channels: int
    sample_format: SampleFormat
    samples: int
    data_offset: int


def _header(sample_rate: int, channels: int, fmt: SampleFormat, samples: int) -> bytes:
    block_align = channels * _BYTES[fmt]
    data_bytes = samples * block_align
    fmt_chunk = struct.pack(
        "<4sIHHIIHH",
        b"fmt ",
        16,
        _FORMAT_TAG[fmt],
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        8 * _BYTES[fmt],
    )
    # Non-PCM formats carry a `fact` chunk with the sample count (RIFF spec); readers tolerate it everywhere.
    fact_chunk = struct.pack("<4sII", b"fact", 4, samples) if fmt == "f32" else b""
    riff_size = 4 + len(fmt_chunk) + len(fact_chunk) + 8 + data_bytes
    return (
        struct.pack("<4sI4s", b"RIFF", min(riff_size, _MAX_RIFF), b"WAVE")
        + fmt_chunk
        + fact_chunk
        + struct.pack("<4sI", b"data", min(data_bytes, _MAX_RIFF))
    )


class WavWriter:
    """Writes a WAV file incrementally; the file appears at `path` only after a successful `close()`."""

    def __init__(
        self, path: Path | str, sample_rate: int, channels: int, sample_format: SampleFormat = "f32"
    ):
        if sample_format not in _FORMAT_TAG:
            raise ValueError(f"sample_format must be 'f32' or 's16', got {sample_format!r}")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1 Hz, got {sample_rate}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.sample_rate = sample_rate
        self.channels = channels
        self.sample_format: SampleFormat = sample_format
        self.samples_written = 0
        self._file = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._file.write(_header(sample_rate, channels, sample_format, 0))

    def write(self, audio_CS: np.ndarray) -> None:
        """Append samples: float [channels, samples] in [-1, 1] (values outside are clipped)."""
        audio_CS = np.asarray(audio_CS)
        if audio_CS.ndim != 2 or audio_CS.shape[0] != self.channels:
            raise ValueError(
                f"audio_CS must have shape [channels={self.channels}, samples], got {tuple(audio_CS.shape)}; "
                "transpose [samples, channels] input with .T"
            )
        if not np.issubdtype(audio_CS.dtype, np.floating):
            raise ValueError(
                f"audio_CS must be float in [-1, 1], got dtype {audio_CS.dtype}; scale ints first"
            )
        if self._file.closed:
            raise RuntimeError(f"WavWriter for {self.path} is already closed")
        clipped_SC = np.clip(audio_CS.T, -1.0, 1.0)
        if self.sample_format == "s16":
            data_SC = np.round(clipped_SC * 32767.0).astype(_DTYPE["s16"])
        else:
            data_SC = clipped_SC.astype(_DTYPE["f32"])
        self._file.write(np.ascontiguousarray(data_SC).tobytes())
        self.samples_written += audio_CS.shape[1]

    def close(self) -> Path:
        """Patch the header sizes, fsync and move the file to its final path."""
        if self._file.closed:
            return self.path
        data_bytes = self.samples_written * self.channels * _BYTES[self.sample_format]
        if data_bytes + 64 > _MAX_RIFF:
            self.abort()
            raise ValueError(
                f"{self.path.name}: {data_bytes} bytes of audio exceed the 4 GiB WAV limit; "
                "use sample_format='s16' or split the audio"
            )
        self._file.seek(0)
        self._file.write(_header(self.sample_rate, self.channels, self.sample_format, self.samples_written))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._file.closed:
            self._file.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_wav_info(path: Path | str) -> WavInfo:
    """Parse the chunks of a 16-bit PCM or 32-bit float WAV file up to its `data` chunk."""
    with open(path, "rb") as f:
        riff, _, wave = struct.unpack("<4sI4s", f.read(12))
        if riff != b"RIFF" or wave != b"WAVE":
            raise ValueError(f"{path} is not a RIFF/WAVE file")
        fmt: tuple | None = None
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path} has no data chunk")
            chunk_id, size = struct.unpack("<4sI", head)
            if chunk_id == b"fmt ":
                fmt = struct.unpack("<HHIIHH", f.read(16))
                f.seek(size - 16 + (size & 1), os.SEEK_CUR)
            elif chunk_id == b"data":
                break
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)
        data_offset = f.tell()
        file_size = os.fstat(f.fileno()).st_size
    if fmt is None:
        raise ValueError(f"{path} has no fmt chunk before its data chunk")
    tag, channels, rate, _, block_align, bits = fmt
    kinds = {(1, 16): "s16", (3, 32): "f32"}
    if (tag, bits) not in kinds:
        raise ValueError(
            f"{path}: WAV format tag {tag} with {bits} bits is not supported (16-bit PCM or float32)"
        )
    # Trust the file size over the header so a file whose header was never patched still reads.
    samples = min(size, file_size - data_offset) // block_align
    return WavInfo(rate, channels, kinds[(tag, bits)], samples, data_offset)  # type: ignore[arg-type]


def iter_wav(path: Path | str, chunk_samples: int = 65536) -> Iterator[np.ndarray]:
    """Yield float32 [channels, samples] chunks of at most `chunk_samples` samples."""
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
    info = read_wav_info(path)
    dtype = _DTYPE[info.sample_format]
    with open(path, "rb") as f:
        f.seek(info.data_offset)
        left = info.samples
        while left > 0:
            n = min(chunk_samples, left)
            data_SC = np.frombuffer(f.read(n * info.channels * dtype.itemsize), dtype=dtype)
            data_SC = data_SC.reshape(n, info.channels)
            out_CS = data_SC.T.astype(np.float32)
            if info.sample_format == "s16":
                out_CS /= 32767.0
            yield np.ascontiguousarray(out_CS)
            left -= n
