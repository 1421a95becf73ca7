"""The audio half of a job's layout: codec facts, the time grid and each block's audio ranges, before any weights.

Every rank of an `av` job derives the same audio layout from the resolved config (as `JobLayout` does for the
video), so stages never exchange it. The codec's rate, hop and channels are read from its config alone, which
lets validation reject a bad grid before a process starts and lets the planner size messages.

Legend: C_a audio latent channels, K audio channels, A audio latents per video latent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from dualpar.av.codec import TinyCodecConfig
from dualpar.av.config import AudioConfig
from dualpar.av.timegrid import TimeGrid
from dualpar.av.window import AVWindow, av_window
from dualpar.schedule.blockwise import BlockGeometry


@dataclass(frozen=True)
class CodecFacts:
    """What the engine needs to know about an audio codec without loading it."""

    sample_rate: int
    hop: int
    channels: int
    latent_channels: int


def codec_facts(audio: AudioConfig) -> CodecFacts:
    """Rate, hop and channels of `audio.codec` from its config file (tiny: built-in unless a directory is given)."""
    if audio.codec == "tiny":
        cfg = TinyCodecConfig()
        if audio.codec_path:
            raw = json.loads((Path(audio.codec_path) / "config.json").read_text())
            raw.pop("_class_name", None)
            raw["frequencies"] = tuple(raw.get("frequencies", ()))
            cfg = TinyCodecConfig(**raw)
        return CodecFacts(cfg.sample_rate, cfg.hop, cfg.channels, cfg.latent_channels)
    assert audio.codec_path is not None
    folder = Path(audio.codec_path) / (audio.codec_subfolder or "")
    raw = json.loads((folder / "config.json").read_text())
    return CodecFacts(int(raw["sampling_rate"]), math.prod(int(r) for r in raw["downsampling_ratios"]),
                      int(raw["audio_channels"]), int(raw["decoder_input_channels"]))


@dataclass(frozen=True)
class AVLayout:
    """Audio options, codec facts and the shared clock of one `av` job, plus per-block audio ranges."""

    audio: AudioConfig
    codec: CodecFacts
    grid: TimeGrid
    geometry: BlockGeometry
    frames: int

    @staticmethod
    def build(audio: AudioConfig, geometry: BlockGeometry, frames: int, fps: Fraction | int,
              temporal_stride: int, causal_first_frame: bool) -> AVLayout:
        facts = codec_facts(audio)
        grid = TimeGrid(Fraction(fps), facts.sample_rate, facts.hop, temporal_stride, causal_first_frame)
        return AVLayout(audio, facts, grid, geometry, frames)

    @property
    def slots(self) -> int:
        """Static audio tokens of every window (aligned: exactly (P+C)*A)."""
        return self.grid.slots(self.geometry.window_latents)

    @property
    def total_samples(self) -> int:
        return self.grid.total_samples(self.frames)

    def window(self, block: int) -> AVWindow:
        return _window(self.grid, self.geometry, block)

    def own_audio(self, block: int) -> range:
        """Global audio latents that `block` owns."""
        return self.grid.block_audio_latents(block, self.geometry)

    def left_audio(self, block: int) -> int:
        """Audio latents of the left context in `block`'s window (the end of block-1's own audio): where the
        block's own audio starts among its window's audio tokens."""
        return self.own_audio(block).start - self.grid.window_audio_latents(block, self.geometry).start


@lru_cache(maxsize=8)
def _window(grid: TimeGrid, geometry: BlockGeometry, block: int) -> AVWindow:
    return av_window(grid, geometry, block)
