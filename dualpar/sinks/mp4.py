"""Crash-safe streaming mp4 output: one closed, playable segment per frame block, joined at the end.

A render of thousands of frames takes hours and may crash; frames must never pile up in memory, and every
block already finished must survive a crash. So each `write_block` encodes its frames into a complete mp4
segment (`<stem>.parts/000012.mp4`, written under a tmp name and renamed), with the block's audio stored
beside it losslessly as float32 WAV. `state()` is small plain data for checkpoints; `resume()` deletes what
was written after that checkpoint and carries on. `close()` joins the segments by stream copy, encoding AAC
once over the whole track (see `concat.py`), and renames the result into place.

Legend: F = frames, H = height, W = width, C = audio channels, S = samples per channel.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from dualpar.sinks.concat import AUDIO_LAYOUTS, AudioEncoding, SegmentFiles, concat_segments
from dualpar.sinks.wav import WavWriter

STATE_VERSION = 1
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}


@dataclass(frozen=True)
class AudioSpec:
    """The audio track that comes with the video: PCM per block in, one AAC track out."""

    sample_rate: int
    channels: int
    bit_rate: int = 192_000  # AAC bit rate of the final track

    def __post_init__(self) -> None:
        if self.sample_rate not in _AAC_RATES:
            raise ValueError(f"sample_rate must be one AAC supports {_AAC_RATES}, got {self.sample_rate}")
        if self.channels not in AUDIO_LAYOUTS:
            raise ValueError(f"channels must be 1..8 (AAC layouts), got {self.channels}")
        if self.bit_rate < 8000:
            raise ValueError(f"bit_rate must be >= 8000 bit/s, got {self.bit_rate}")


@dataclass(frozen=True)
class _Config:
    fps: Fraction
    width: int
    height: int
    total_frames: int
    name: str
    codec: str
    crf: int
    preset: str
    audio: AudioSpec | None
    write_wav: bool

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> _Config:
        data = dict(data)
        data["fps"] = Fraction(data["fps"])
        data["audio"] = AudioSpec(**data["audio"]) if data["audio"] is not None else None
        return _Config(**data)


@dataclass
class _Segment:
    """One block on disk: its video segment holds `frames` frames, its WAV `samples` samples (0: no file)."""

    block: int
    frames: int
    samples: int


@dataclass
class _Progress:
    """Everything `state()` saves besides the configuration."""

    blocks_written: int = 0
    frames_written: int = 0
    samples_written: int = 0
    segments: list[_Segment] = field(default_factory=list)


def _validate(cfg: _Config) -> None:
    if cfg.fps <= 0:
        raise ValueError(f"fps must be > 0, got {cfg.fps}")
    if cfg.width < 2 or cfg.height < 2 or cfg.width % 2 or cfg.height % 2:
        raise ValueError(
            f"width and height must be even and >= 2 for yuv420p, got {cfg.width}x{cfg.height}; "
            "crop or pad the frames to even sizes"
        )
    if cfg.total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {cfg.total_frames}")
    if Path(cfg.name).name != cfg.name or Path(cfg.name).suffix.lower() not in _FORMATS:
        raise ValueError(f"name must be a plain file name ending in {sorted(_FORMATS)}, got {cfg.name!r}")
    if cfg.write_wav and cfg.audio is None:
        raise ValueError("write_wav=True needs audio=AudioSpec(...); pass audio or drop write_wav")
    if not 0 <= cfg.crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {cfg.crf}")
    try:
        av.codec.Codec(cfg.codec, "w")
    except Exception as exc:  # PyAV raises UnknownCodecError (a ValueError subclass) or FFmpegError
        raise ValueError(f"codec {cfg.codec!r} has no encoder in this PyAV build; use 'libx264'") from exc


class Mp4SegmentSink:
    """Streams frame blocks into crash-safe mp4 segments and joins them into `out_dir/name` at `close()`."""

    def __init__(
        self,
        out_dir: Path | str,
        fps: Fraction | int,
        width: int,
        height: int,
        total_frames: int,
        name: str = "video.mp4",
        codec: str = "libx264",
        crf: int = 18,
        audio: AudioSpec | None = None,
        write_wav: bool = False,
        preset: str = "medium",
    ):
        cfg = _Config(
            Fraction(fps),
            int(width),
            int(height),
            int(total_frames),
            name,
            codec,
            int(crf),
            preset,
            audio,
            write_wav,
        )
        _validate(cfg)
        self._attach(Path(out_dir), cfg, _Progress())
        # A fresh render owns its parts folder: leftovers of an abandoned run would end up in the video.
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.parts_dir.mkdir(parents=True)

    def _attach(self, out_dir: Path, cfg: _Config, progress: _Progress) -> None:
        self.out_dir = out_dir
        self.cfg = cfg
        self.progress = progress
        self.parts_dir = out_dir / f"{Path(cfg.name).stem}.parts"
        self.closed = False

    @property
    def frames_written(self) -> int:
        return self.progress.frames_written

    @property
    def blocks_written(self) -> int:
        return self.progress.blocks_written

    @property
    def samples_written(self) -> int:
        return self.progress.samples_written

    @property
    def target_samples(self) -> int:
        """Audio samples that match `total_frames` of video; audio beyond this is trimmed like frames."""
        if self.cfg.audio is None:
            return 0
        # ceil(total_frames * sr / fps) in integers: the same rule as the time grid (AUDIO_VIDEO.md 1)
        fps = self.cfg.fps
        return -(-self.cfg.total_frames * self.cfg.audio.sample_rate * fps.denominator // fps.numerator)

    def _video_path(self, block: int) -> Path:
        return self.parts_dir / f"{block:06d}.mp4"

    def _audio_path(self, block: int) -> Path:
        return self.parts_dir / f"{block:06d}.wav"

    # ------------------------------------------------------------------ writing

    def write_block(self, block_index: int, frames_FHWC: np.ndarray, audio_CS: np.ndarray | None = None) -> None:
        """Encode one block into its own closed segment; frames past `total_frames` are dropped."""
        if self.closed:
            raise RuntimeError(f"{self.cfg.name}: write_block after close()")
        if block_index != self.blocks_written:
            raise ValueError(
                f"block_index must be {self.blocks_written} (blocks go in order), got {block_index}; "
                "after a crash, continue with Mp4SegmentSink.resume(out_dir, state) and its blocks_written"
            )
        frames_FHWC = self._check_frames(frames_FHWC)
        audio_CS = self._check_audio(audio_CS)
        keep_frames = min(len(frames_FHWC), self.cfg.total_frames - self.frames_written)
        keep_samples = 0
        if audio_CS is not None:
            keep_samples = min(audio_CS.shape[1], self.target_samples - self.samples_written)
        # Audio first: a video segment on disk means its block is complete.
        if keep_samples > 0:
            with WavWriter(self._audio_path(block_index), self.cfg.audio.sample_rate, self.cfg.audio.channels) as w:
                w.write(audio_CS[:, :keep_samples])
        if keep_frames > 0:
            self._encode_segment(self._video_path(block_index), frames_FHWC[:keep_frames])
        if keep_frames > 0 or keep_samples > 0:
            self.progress.segments.append(_Segment(block_index, keep_frames, keep_samples))
        self.progress.blocks_written += 1
        self.progress.frames_written += keep_frames
        self.progress.samples_written += keep_samples

    def _check_frames(self, frames_FHWC: np.ndarray) -> np.ndarray:
        frames_FHWC = np.asarray(frames_FHWC)
        want = (self.cfg.height, self.cfg.width, 3)
        if frames_FHWC.ndim != 4 or frames_FHWC.shape[1:] != want:
            raise ValueError(f"frames_FHWC must have shape [F, {want[0]}, {want[1]}, 3], got {frames_FHWC.shape}")
        if frames_FHWC.dtype != np.uint8:
            raise ValueError(
                f"frames_FHWC must be uint8, got {frames_FHWC.dtype}; "
                "convert with (x * 255).round().clip(0, 255).astype(np.uint8)"
            )
        return frames_FHWC

    def _check_audio(self, audio_CS: np.ndarray | None) -> np.ndarray | None:
        spec = self.cfg.audio
        if spec is None:
            if audio_CS is not None:
                raise ValueError("audio_CS was given but the sink has no audio; pass audio=AudioSpec(...)")
            return None
        if audio_CS is None:
            raise ValueError("audio_CS is required: the sink was made with audio=AudioSpec(...)")
        audio_CS = np.asarray(audio_CS)
        if audio_CS.ndim != 2 or audio_CS.shape[0] != spec.channels:
            raise ValueError(
                f"audio_CS must have shape [channels={spec.channels}, samples], got {audio_CS.shape}; "
                "transpose [samples, channels] input with .T"
            )
        if not np.issubdtype(audio_CS.dtype, np.floating):
            raise ValueError(f"audio_CS must be float32 in [-1, 1], got {audio_CS.dtype}")
        return audio_CS.astype(np.float32, copy=False)

    def _encode_segment(self, path: Path, frames_FHWC: np.ndarray) -> None:
        tmp = path.with_name(path.name + ".tmp")
        options = {"bf": "0"}  # no B-frames: pts == dts, so segments join by a plain timestamp shift
        if self.cfg.codec in ("libx264", "libx265"):
            options |= {"crf": str(self.cfg.crf), "preset": self.cfg.preset}
        fps = self.cfg.fps
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream(self.cfg.codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = self.cfg.width, self.cfg.height, "yuv420p"
            stream.time_base = 1 / fps
            for i, frame_HWC in enumerate(frames_FHWC):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_HWC), format="rgb24")
                frame.pts, frame.time_base = i, 1 / fps
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        _fsync_path(tmp)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Plain, JSON-able progress to store in a checkpoint (pass it to `resume`)."""
        return {
            "version": STATE_VERSION,
            "config": self.cfg.to_json(),
            "blocks_written": self.blocks_written,
            "frames_written": self.frames_written,
            "samples_written": self.samples_written,
            "segments": [
                {"name": f"{s.block:06d}", "block": s.block, "frames": s.frames, "samples": s.samples}
                for s in self.progress.segments
            ],
        }

    @classmethod
    def resume(cls, out_dir: Path | str, state: dict[str, Any], **expected: Any) -> Mp4SegmentSink:
        """Continue after a crash from a checkpointed `state()`.

        Segments written after that state are deleted, so the engine re-renders from `blocks_written` with no
        duplicates. Keyword arguments (e.g. `total_frames=...`) are checked against the stored configuration.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version must be {STATE_VERSION}, got {state.get('version')}; not a sink state")
        cfg = _Config.from_json(state["config"])
        for key, value in expected.items():
            if key not in cfg.to_json():
                raise ValueError(f"resume got unknown argument {key!r}; known: {sorted(cfg.to_json())}")
            stored = getattr(cfg, key)
            if (Fraction(value) if key == "fps" else value) != stored:
                raise ValueError(f"{key}={value!r} differs from the checkpoint's {stored!r}; resume the same video")
        segments = [_Segment(s["block"], s["frames"], s["samples"]) for s in state["segments"]]
        progress = _Progress(state["blocks_written"], state["frames_written"], state["samples_written"], segments)
        sink = cls.__new__(cls)
        sink._attach(Path(out_dir), cfg, progress)
        sink._prune_to_state()
        return sink

    def _prune_to_state(self) -> None:
        keep: set[Path] = set()
        for seg in self.progress.segments:
            if seg.frames:
                keep.add(self._video_path(seg.block))
            if seg.samples:
                keep.add(self._audio_path(seg.block))
        missing = sorted(p.name for p in keep if not p.is_file())
        if missing:
            raise FileNotFoundError(
                f"{self.parts_dir} lacks segments {missing[:5]} named by the checkpoint; "
                "the checkpoint is newer than the files (or close() already ran): start a new sink"
            )
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        for path in self.parts_dir.iterdir():
            if path not in keep:
                path.unlink()

    # ------------------------------------------------------------------ finishing

    def close(self, allow_partial: bool = False, keep_parts: bool = False) -> Path:
        """Join the segments into `out_dir/name` (stream copy, AAC encoded once); delete the parts folder
        unless `keep_parts` (a checkpointed render keeps them until its checkpoints are gone, so a crash
        anywhere in finishing resumes and joins again; then `discard_parts`)."""
        final = self.out_dir / self.cfg.name
        if self.closed:
            return final
        if self.frames_written < self.cfg.total_frames and not allow_partial:
            raise ValueError(
                f"close() after {self.frames_written} of total_frames={self.cfg.total_frames} frames; "
                "write the remaining blocks or pass allow_partial=True"
            )
        audio = None
        if self.cfg.audio is not None:
            wav_path = self.out_dir / "audio.wav" if self.cfg.write_wav else None
            audio = AudioEncoding(
                self.cfg.audio.sample_rate, self.cfg.audio.channels, self.cfg.audio.bit_rate, wav_path
            )
        files = [
            SegmentFiles(
                self._video_path(s.block) if s.frames else None,
                self._audio_path(s.block) if s.samples else None,
                s.frames,
            )
            for s in self.progress.segments
        ]
        tmp = final.with_name(final.name + ".tmp")
        try:
            concat_segments(files, tmp, _FORMATS[final.suffix.lower()], self.cfg.fps, audio)
            _fsync_path(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        if not keep_parts:
            self.discard_parts()
        self.closed = True
        return final

    def discard_parts(self) -> None:
        """Delete the segments folder (after `close()`, once nothing can resume from them)."""
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    def __enter__(self) -> Mp4SegmentSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:  # on error the segments stay on disk for resume()
            self.close()


def _fsync_path(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
