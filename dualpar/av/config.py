"""Typed options of the `av` job (the `audio:` mapping of the config; conf/job/av.yaml sets the defaults).

One default and one comment per field, validated once in `__post_init__`, unknown keys rejected with the list
of known ones, so a typo fails before any process starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

CODECS = ("tiny", "oobleck")
INITS = ("random", "from_video", "checkpoint")
NOISES = ("independent",)
MODES = ("auto", "aligned", "padded")


@dataclass(frozen=True)
class AudioConfig:
    """Audio branch, codec, guidance and noise options of an `av` job."""

    codec: str = "tiny"  # tiny (16 kHz, hop 500: A = 8 at 16 fps) | oobleck (Stable Audio VAE, padded mode)
    codec_path: str | None = None  # local codec directory (from_pretrained); tiny: optional
    codec_subfolder: str | None = None  # e.g. "vae" inside a Stable Audio checkpoint
    width_ratio: float = 1.0  # audio tower width relative to the video tower: 1.0 or 0.5
    fusion_every: int = 1  # fusion sub-layer in every k-th layer (0: none, towers independent)
    init: str = "random"  # random | from_video (width 1.0) | checkpoint (audio tower directory)
    checkpoint: str | None = None  # audio tower directory for init=checkpoint
    mode: str = "auto"  # auto | aligned (require integer A) | padded
    guidance: float = 3.0  # audio guidance scale g_a (video keeps schedule.guidance)
    sync_guidance: float | None = None  # g_s: third batch row with fusion off (about 3); null: off
    noise: str = "independent"  # independent: block k's audio noise is seeded from (seed, k)
    init_seed: int = 0  # init=random: weights are a function of (init_seed, parameter name)
    wav: bool = False  # also write the soundtrack as audio.wav (16-bit PCM) beside video.mp4

    def __post_init__(self) -> None:
        _choice("codec", self.codec, CODECS)
        _choice("init", self.init, INITS)
        _choice("noise", self.noise, NOISES)
        _choice("mode", self.mode, MODES)
        if self.width_ratio not in (1.0, 0.5):
            raise ValueError(f"audio.width_ratio must be 1.0 or 0.5, got {self.width_ratio}")
        if self.fusion_every < 0:
            raise ValueError(f"audio.fusion_every must be >= 0, got {self.fusion_every}")
        if self.init == "checkpoint" and not self.checkpoint:
            raise ValueError("audio.init=checkpoint needs audio.checkpoint=<audio tower directory>")
        if self.init == "from_video" and self.width_ratio != 1.0:
            raise ValueError("audio.init=from_video copies the video blocks: set audio.width_ratio=1.0")
        if self.codec == "oobleck" and not self.codec_path:
            raise ValueError("audio.codec=oobleck needs audio.codec_path=<local AutoencoderOobleck directory>")
        if self.guidance <= 0 or (self.sync_guidance is not None and self.sync_guidance <= 0):
            raise ValueError("audio.guidance and audio.sync_guidance must be > 0")
        if self.sync_guidance is not None and self.fusion_every == 0:
            raise ValueError("audio.sync_guidance needs fusion (audio.fusion_every >= 1)")

    @property
    def guidance_rows(self) -> int:
        """Batch rows per window: cond, uncond and, with sync guidance, cond without fusion."""
        return 3 if self.sync_guidance is not None else 2

    def check_grid(self, grid: Any) -> None:
        """Reject mode=aligned on a grid whose A = s*sr/(F*hop) is not an integer (a `TimeGrid`)."""
        if self.mode == "aligned" and not grid.aligned:
            raise ValueError(f"audio.mode=aligned needs an integer A, got A = {grid.audio_per_latent()} "
                             f"(fps {grid.fps}, sr {grid.sample_rate}, hop {grid.hop}); use mode=auto or padded")

    @staticmethod
    def from_mapping(raw: Mapping[str, Any] | None) -> AudioConfig:
        raw = dict(raw or {})
        known = {f.name for f in fields(AudioConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"audio.{unknown[0]} is not a known option; known: {', '.join(sorted(known))}")
        return AudioConfig(**raw)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"audio.{name}={value!r} is not one of {', '.join(allowed)}")
