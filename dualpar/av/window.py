"""Per-window layout of the two modalities: token ranges, cache slices, static slots and RoPE positions.

A stage needs, for block k's window, the same facts for video and audio: which latents are in it, which of
its tokens go into the feature cache for the block processed next (block k-1), which cached tokens of block
k+1 are appended to its keys, and where all of them sit on the shared window-local clock. This module derives
them from the `TimeGrid` and `BlockGeometry` alone (pure integers and Fractions), so every stage computes the
same layout without communication.

Positions are window-local in latent-frame units (AUDIO_VIDEO.md section 4): the window's first latent is 0,
cached tokens continue past P+C for both modalities. Padded mode pads the window's audio to `audio_slots` and
marks real tokens in `audio_valid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

from dualpar.av.rope import TimeRope
from dualpar.av.timegrid import TimeGrid
from dualpar.schedule.blockwise import BlockGeometry


@dataclass(frozen=True)
class AVWindow:
    """Layout of one window (block `block`); audio ranges are global audio-latent indices."""

    block: int
    video: range  # video latents of the window
    audio: range  # audio latents of the window (real tokens; padded to audio_slots)
    audio_slots: int
    store_video: range  # window-local video latents stored in the cache (the first C own latents)
    store_audio: range  # window-local audio tokens stored in the cache
    cached_video: range  # video latents of block k+1 whose cached K/V extend this window's keys
    cached_audio: range  # audio latents of the same
    video_u: tuple[Fraction, ...]  # window-local time of window + cached video latents
    audio_u: tuple[Fraction, ...]  # of audio slots (pads continue at 1/A spacing) + cached audio latents

    def video_positions(self, with_cache: bool = True) -> torch.Tensor:
        """float64 [F_w (+ C)] time positions of video latent frames."""
        n = len(self.video) + (len(self.cached_video) if with_cache else 0)
        return torch.tensor([float(u) for u in self.video_u[:n]], dtype=torch.float64)

    def audio_positions(self, with_cache: bool = True) -> torch.Tensor:
        """float64 [slots (+ cached)] time positions of audio tokens."""
        n = self.audio_slots + (len(self.cached_audio) if with_cache else 0)
        return torch.tensor([float(u) for u in self.audio_u[:n]], dtype=torch.float64)

    def audio_valid(self, with_cache: bool = True) -> torch.Tensor:
        """bool [slots (+ cached)]: False on padding slots (padded mode only)."""
        valid = [True] * len(self.audio) + [False] * (self.audio_slots - len(self.audio))
        if with_cache:
            valid += [True] * len(self.cached_audio)
        return torch.tensor(valid, dtype=torch.bool)

    def time_ropes(self, head_dim: int, tokens_per_frame: int, device: torch.device | str | None = None
                   ) -> tuple[TimeRope, TimeRope]:
        """(video, audio) temporal-only RoPE tables over window plus cached tokens, for `AVLayerInputs`."""
        return (TimeRope.from_positions(self.video_positions(), head_dim, tokens_per_frame, device),
                TimeRope.from_positions(self.audio_positions(), head_dim, 1, device))

    def window_audio_valid(self) -> torch.Tensor | None:
        """`AVLayerInputs.audio_valid_S`: the window slots' mask, or None when every slot is real."""
        if len(self.audio) == self.audio_slots:
            return None
        return self.audio_valid(with_cache=False)

    def video_store_tokens(self, tokens_per_frame: int) -> slice:
        """Token slice of the window's video hidden states that the cache keeps."""
        return slice(self.store_video.start * tokens_per_frame, self.store_video.stop * tokens_per_frame)

    def audio_store_tokens(self) -> slice:
        return slice(self.store_audio.start, self.store_audio.stop)


def av_window(grid: TimeGrid, geometry: BlockGeometry, block: int) -> AVWindow:
    """Layout of `block`'s window (any block 0 <= block < n_blocks)."""
    if not 0 <= block < geometry.n_blocks:
        raise ValueError(f"block {block} is outside [0, {geometry.n_blocks})")
    c = geometry.context_latents
    win = geometry.window_range(block)
    audio = grid.audio_of_latents(win.start, win.stop)
    slots = grid.slots(geometry.window_latents)
    own0 = geometry.own_range(block).start
    stored = grid.audio_of_latents(own0, own0 + c)
    right0 = (block + 1) * geometry.block_latents + c  # first own latent of block k+1 (exists or not)
    cached_video = range(right0, right0 + c)
    cached_audio = grid.audio_of_latents(right0, right0 + c)
    origin = win.start
    video_u = tuple(Fraction(i - origin) for i in list(win) + list(cached_video))
    pad_step = 1 / grid.audio_per_latent()
    audio_u = [grid.audio_position(j) - origin for j in audio]
    last = audio_u[-1] if audio_u else grid.audio_position(audio.start) - origin - pad_step
    audio_u += [last + pad_step * (m + 1) for m in range(slots - len(audio))]
    audio_u += [grid.audio_position(j) - origin for j in cached_audio]
    return AVWindow(
        block=block, video=win, audio=audio, audio_slots=slots,
        store_video=range(own0 - win.start, own0 - win.start + c),
        store_audio=range(stored.start - audio.start, stored.stop - audio.start),
        cached_video=cached_video, cached_audio=cached_audio,
        video_u=video_u, audio_u=tuple(audio_u),
    )
