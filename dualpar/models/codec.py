"""The latent codec interface: how latent frames map to pixel frames and how they are decoded as a stream.

Wan's causal VAE (4x temporal, 8x spatial; latent 0 -> 1 frame, latent i >= 1 -> 4 frames) and the toy
world's lossless space-to-depth codec (2x temporal, 4x spatial; every latent -> 2 frames) both fit it.
Latents handed to a codec are in the transformer's space (before any mean/std de-normalisation); the
codec undoes its own normalisation.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch


class StreamDecoder(Protocol):
    """Decodes consecutive latent chunks of one video, keeping whatever cache the codec needs between them."""

    def decode(self, latents_BCFHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], shape [B, 3, frames, H, W], for exactly these latent frames, in order."""
        ...


class LatentCodec(Protocol):
    z_dim: int
    temporal_stride: int
    spatial_stride: int
    causal_first_frame: bool

    def stream_decoder(self) -> StreamDecoder: ...


def pixel_frames(codec: LatentCodec, latent_frames: int) -> int:
    """Pixel frames decoded from `latent_frames` latents."""
    s = codec.temporal_stride
    if codec.causal_first_frame:
        return s * (latent_frames - 1) + 1 if latent_frames > 0 else 0
    return s * latent_frames


def latents_for_frames(codec_temporal_stride: int, causal_first_frame: bool, frames: int) -> int:
    """Fewest latent frames whose decode covers `frames` pixel frames."""
    if causal_first_frame:
        return 1 + math.ceil(max(frames - 1, 0) / codec_temporal_stride)
    return math.ceil(frames / codec_temporal_stride)


def to_uint8_frames(video_BCFHW: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3], with diffusers' VideoProcessor rounding."""
    x = (video_BCFHW[0].float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)
