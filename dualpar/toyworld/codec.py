"""Lossless space-time-to-depth codec: the toy world's stand-in for Wan's VAE.

It exists so the shipped toy model has a latent space with Wan's shape conventions (channels x latent frames
x latent rows x latent columns) at no training cost: (t, h, w) blocks of pixels become channels, and decode is
the exact inverse. Each latent frame maps to `temporal_stride` pixel frames (no causal first frame), so a
stream of latent chunks decodes independently chunk by chunk.

Legend: B batch, C channels, F frames, H/W pixels (or latent rows/columns for latents).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIG_NAME = "config.json"


class SpaceToDepthStreamDecoder:
    """Decodes consecutive latent chunks; stateless because latents never straddle chunks."""

    def __init__(self, codec: SpaceToDepthCodec) -> None:
        self.codec = codec

    def decode(self, latents_BCFHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], [B, 3, 2 * latent frames, H, W]."""
        return self.codec.decode(latents_BCFHW)


class SpaceToDepthCodec:
    """RGB [B, 3, F, H, W] in [-1, 1] <-> latents [B, 3*t*h*w, F/t, H/h, W/w], optional affine scaling."""

    causal_first_frame: bool = False

    def __init__(self, temporal_factor: int = 2, spatial_factor: int = 4, channels: int = 3,
                 scale: float = 1.0, shift: float = 0.0) -> None:
        if temporal_factor < 1 or spatial_factor < 1:
            raise ValueError(f"factors must be >= 1, got t={temporal_factor} s={spatial_factor}")
        if scale == 0:
            raise ValueError("scale must be non-zero")
        self.temporal_stride = int(temporal_factor)
        self.spatial_stride = int(spatial_factor)
        self.channels = int(channels)
        self.scale = float(scale)
        self.shift = float(shift)
        self.z_dim = self.channels * self.temporal_stride * self.spatial_stride**2

    def encode(self, video_BCFHW: torch.Tensor) -> torch.Tensor:
        """Video -> normalised latents; frames and sizes must be divisible by the factors."""
        b, c, f, h, w = video_BCFHW.shape
        t, s = self.temporal_stride, self.spatial_stride
        if c != self.channels or f % t or h % s or w % s:
            raise ValueError(f"video shape {tuple(video_BCFHW.shape)} needs {self.channels} channels, "
                             f"frames divisible by {t} and H, W divisible by {s}")
        x = video_BCFHW.reshape(b, c, f // t, t, h // s, s, w // s, s)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, self.z_dim, f // t, h // s, w // s)
        return (x - self.shift) * self.scale

    def decode(self, latents_BCFHW: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> video in the encoder's range (exact inverse of `encode`)."""
        b, z, f, h, w = latents_BCFHW.shape
        t, s = self.temporal_stride, self.spatial_stride
        if z != self.z_dim:
            raise ValueError(f"latents have {z} channels, codec expects {self.z_dim}")
        x = latents_BCFHW / self.scale + self.shift
        x = x.reshape(b, self.channels, t, s, s, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(b, self.channels, f * t, h * s, w * s)

    def stream_decoder(self) -> SpaceToDepthStreamDecoder:
        return SpaceToDepthStreamDecoder(self)

    def config(self) -> dict:
        return {"_class_name": "SpaceToDepthCodec", "temporal_factor": self.temporal_stride,
                "spatial_factor": self.spatial_stride, "channels": self.channels, "scale": self.scale,
                "shift": self.shift, "z_dim": self.z_dim}

    def save_pretrained(self, path: str | Path) -> None:
        """Write `config.json` into `path` (the model directory's `vae/` folder)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, **_: object) -> SpaceToDepthCodec:
        """Read a codec from a `vae/` folder (or a model directory containing one)."""
        path = Path(path)
        if not (path / CONFIG_NAME).exists() and (path / "vae" / CONFIG_NAME).exists():
            path = path / "vae"
        cfg = json.loads((path / CONFIG_NAME).read_text())
        return cls(temporal_factor=cfg.get("temporal_factor", 2), spatial_factor=cfg.get("spatial_factor", 4),
                   channels=cfg.get("channels", 3), scale=cfg.get("scale", 1.0), shift=cfg.get("shift", 0.0))
