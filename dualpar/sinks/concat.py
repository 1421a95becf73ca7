"""Join per-block segments into one ordinary mp4 by stream copy, encoding AAC exactly once.

Video segments are H.264 files without B-frames that each start with a keyframe, so joining them is a remux:
packets are copied with their timestamps shifted by the frames that came before; nothing is re-encoded.
Audio was stored per block losslessly (AAC per segment would add priming and padding at every join); it is
streamed through a single AAC encoder here, interleaved with the video block by block. Memory holds at most
one block of audio and one AAC frame of carry-over, however long the video is.

Legend: C = audio channels, S = samples per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dualpar.sinks.wav import WavWriter, iter_wav

# ffmpeg layout names by channel count (PyAV 18 accepts names, not integers).
AUDIO_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_READ_CHUNK = 65536


@dataclass(frozen=True)
class SegmentFiles:
    """One block's files: the video segment (None if the block kept no frames) and its lossless audio."""

    video: Path | None
    audio: Path | None
    frames: int


@dataclass(frozen=True)
class AudioEncoding:
    """How to encode the joined audio track."""

    sample_rate: int
    channels: int
    bit_rate: int
    wav_path: Path | None = None  # also write a 16-bit PCM WAV of the same samples, streamed


class _AacEncoder:
    """Feeds arbitrary-length sample blocks to an encoder that wants fixed `frame_size` frames."""

    def __init__(self, container: av.container.OutputContainer, enc: AudioEncoding):
        self.container = container
        self.stream = container.add_stream("aac", rate=enc.sample_rate, layout=AUDIO_LAYOUTS[enc.channels])
        self.stream.bit_rate = enc.bit_rate
        self.layout = AUDIO_LAYOUTS[enc.channels]
        self.rate = enc.sample_rate
        self.carry_CS = np.zeros((enc.channels, 0), np.float32)
        self.pts = 0

    def _encode(self, chunk_CS: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk_CS), format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.time_base = Fraction(1, self.rate)
        frame.pts = self.pts
        self.pts += chunk_CS.shape[1]
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def feed(self, audio_CS: np.ndarray) -> None:
        frame_size = self.stream.codec_context.frame_size  # known once the container started encoding
        data_CS = np.concatenate([self.carry_CS, np.clip(audio_CS, -1.0, 1.0)], axis=1)
        whole = data_CS.shape[1] - data_CS.shape[1] % frame_size
        for start in range(0, whole, frame_size):
            self._encode(data_CS[:, start : start + frame_size])
        self.carry_CS = data_CS[:, whole:]

    def finish(self) -> None:
        if self.carry_CS.shape[1]:  # AAC accepts a short last frame and pads it itself
            self._encode(self.carry_CS)
            self.carry_CS = self.carry_CS[:, :0]
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def _copy_video(
    container: av.container.OutputContainer,
    out_stream: av.VideoStream,
    path: Path,
    offset_s: Fraction,
    extradata: bytes | None,
) -> int:
    """Mux every packet of the segment at `path`, shifted by `offset_s` seconds; returns packets copied."""
    copied = 0
    with av.open(str(path)) as seg:
        in_stream = seg.streams.video[0]
        if in_stream.codec_context.extradata != extradata:
            # Stream copy keeps the first segment's SPS/PPS: other parameters would decode wrongly.
            raise RuntimeError(
                f"{path.name} was encoded with different codec headers than the first segment; "
                "all segments of one video must use the same codec, size and settings"
            )
        offset = offset_s / in_stream.time_base
        if offset.denominator != 1:
            raise RuntimeError(
                f"{path.name}: offset {offset_s} s is not a whole number of {in_stream.time_base}"
            )
        for packet in seg.demux(in_stream):
            if packet.dts is None:  # demux ends with an empty flush packet
                continue
            packet.pts += int(offset)
            packet.dts += int(offset)
            packet.stream = out_stream
            container.mux(packet)
            copied += 1
    return copied


def concat_segments(
    segments: Sequence[SegmentFiles],
    out_path: Path,
    container_format: str,
    fps: Fraction,
    audio: AudioEncoding | None = None,
) -> None:
    """Write `segments` in order to `out_path` (which the caller renames into place)."""
    template_path = next((s.video for s in segments if s.video is not None), None)
    if template_path is None:
        raise ValueError("no segment holds video frames; write at least one frame before close()")
    wav = (
        WavWriter(audio.wav_path, audio.sample_rate, audio.channels, "s16")
        if audio and audio.wav_path
        else None
    )
    try:
        with (
            av.open(str(template_path)) as template,
            av.open(str(out_path), "w", format=container_format) as out,
        ):
            extradata = template.streams.video[0].codec_context.extradata
            video_stream = out.add_stream_from_template(template.streams.video[0])
            aac = _AacEncoder(out, audio) if audio is not None else None
            out.start_encoding()
            frames_before = 0
            for seg in segments:
                if seg.video is not None:
                    copied = _copy_video(out, video_stream, seg.video, frames_before / fps, extradata)
                    if copied != seg.frames:
                        raise RuntimeError(f"{seg.video.name} holds {copied} packets, expected {seg.frames}")
                frames_before += seg.frames
                if seg.audio is not None and aac is not None:
                    for chunk_CS in iter_wav(seg.audio, _READ_CHUNK):
                        aac.feed(chunk_CS)
                        if wav is not None:
                            wav.write(chunk_CS)
            if aac is not None:
                aac.finish()
    except BaseException:
        if wav is not None:
            wav.abort()
        raise
    if wav is not None:
        wav.close()
