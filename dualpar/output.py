"""Stage 0's output side: finished blocks are decoded as a stream and written as they leave the queue.

Frame accounting lives here: the codec decodes every latent the blocks own, and the writer keeps exactly the
`frames` the user asked for. Nothing holds more than one block of frames at a time. `state()` is everything a
checkpoint needs to continue the outputs (decoder cache, sink progress, latents prefix, preview frames);
`OutputWriter(..., resume=state)` picks them up again with no frame lost or written twice. Finishing is
idempotent: `close()` renames the latents and joins the video but keeps the segments, so a crash anywhere
before the checkpoints are cleared resumes and finishes again; `discard_parts()` comes last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dualpar.av.stream import AudioTrack
from dualpar.job import JobLayout
from dualpar.models.codec import to_uint8_frames
from dualpar.sinks.latents import LatentsWriter
from dualpar.sinks.mp4 import AudioSpec, Mp4SegmentSink
from dualpar.sinks.preview import PreviewCollector


class OutputWriter:
    """Decodes finished blocks and feeds the mp4, preview and latents sinks of one job."""

    def __init__(self, job: JobLayout, codec, out_dir: Path, resume: dict[str, Any] | None = None, audio_codec=None):
        self.job = job
        self.out_dir = out_dir
        out = job.cfg.output
        self.codec = codec if out.video else None
        self.decoder = codec.stream_decoder() if self.codec is not None else None
        self.frames_written = 0
        self.sink = self.preview = self.latents = None
        self.track: AudioTrack | None = None
        h, w = job.latent_hw
        if out.video:
            assert job.cfg.height is not None and job.cfg.width is not None and out.fps is not None
            size = {"fps": out.fps, "width": job.cfg.width, "height": job.cfg.height, "total_frames": job.frames}
            if job.av is not None:  # the soundtrack streams beside the frames (AUDIO_VIDEO.md 7)
                if audio_codec is None:
                    raise ValueError("an av job's output needs its audio codec")
                self.track = AudioTrack(audio_codec, job.av.grid, job.frames)
                size |= {
                    "audio": AudioSpec(job.av.codec.sample_rate, job.av.codec.channels),
                    "write_wav": job.av.audio.wav,
                }
            if resume is None:
                self.sink = Mp4SegmentSink(out_dir, **size)
            else:
                self.sink = Mp4SegmentSink.resume(out_dir, resume["sink"], **size)
            self.preview = PreviewCollector(job.frames) if out.preview else None
        if out.latents:
            shape = (1, job.info.codec.z_dim, job.geometry.total_latents, h, w)
            prefix = int(resume["latents_prefix"]) if resume is not None else 0
            self.latents = LatentsWriter(out_dir / "latents.safetensors", shape, resume_frames=prefix)
        if resume is not None:
            self._load_state(resume)

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds to continue these outputs exactly (small except the decoder cache)."""
        return {
            "frames_written": self.frames_written,
            "decoder": decoder_state(self.decoder) if self.decoder is not None else None,
            "sink": self.sink.state() if self.sink is not None else None,
            "latents_prefix": self.latents.written_prefix if self.latents is not None else 0,
            "preview": dict(self.preview.frames) if self.preview is not None else None,
            "audio_track": self.track.state_dict() if self.track is not None else None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.frames_written = int(state["frames_written"])
        if self.decoder is not None:
            load_decoder_state(self.decoder, state["decoder"])
        if self.preview is not None and state["preview"] is not None:
            self.preview.frames = dict(state["preview"])
        if self.track is not None:
            self.track.load_state_dict(state["audio_track"])

    @property
    def samples_written(self) -> int:
        return self.sink.samples_written if self.sink is not None else 0

    def write_block(self, block: int, latents: tuple[torch.Tensor, ...]) -> int:
        """Write one finished block (`(video latents,)`, or `(video, audio)` for an av job); returns how many
        video frames it added. Its audio is whatever the stream decoder made final (the rest at the last block)."""
        latents_BCFHW = latents[0]
        if self.latents is not None:
            self.latents.write_frames(self.job.geometry.own_range(block).start, latents_BCFHW)
        if self.decoder is None:
            return 0
        frames = to_uint8_frames(self.decoder.decode(latents_BCFHW))
        frames = frames[: max(0, self.job.frames - self.frames_written)]
        pcm = self._block_audio(block, latents[1]) if self.track is not None else None
        if len(frames) or (pcm is not None and pcm.shape[1]):
            self.sink.write_block(block, frames, pcm)
            if self.preview is not None:
                self.preview.offer(self.frames_written, frames)
        self.frames_written += len(frames)
        return len(frames)

    def _block_audio(self, block: int, audio_BCN: torch.Tensor):
        assert self.track is not None
        pcm = self.track.push(audio_BCN.to("cpu", torch.float32))  # the audio codec runs on the host
        if block == self.job.geometry.n_blocks - 1:
            pcm = torch.cat([pcm, self.track.flush()], dim=2)
        return pcm[0].cpu().numpy()

    def close(self) -> dict[str, str]:
        paths: dict[str, str] = {}
        if self.latents is not None:
            paths["latents"] = str(self.latents.close())
        if self.sink is not None:
            paths["video"] = str(self.sink.close(keep_parts=True))  # see discard_parts
            if self.track is not None and self.job.av is not None and self.job.av.audio.wav:
                paths["audio"] = str(self.out_dir / "audio.wav")
            if self.preview is not None:
                paths["preview"] = str(self.preview.save(self.out_dir / "preview.png"))
        return paths

    def discard_parts(self) -> None:
        """After the job's checkpoints are gone: the video segments can no longer be resumed from."""
        if self.sink is not None:
            self.sink.discard_parts()


def decoder_state(decoder) -> Any:
    """A stream decoder's cache between chunks (None for stateless decoders such as space-to-depth)."""
    return decoder.state_dict() if hasattr(decoder, "state_dict") else None


def load_decoder_state(decoder, state: Any) -> None:
    """Inverse of `decoder_state`."""
    if state is not None:
        decoder.load_state_dict(state)
