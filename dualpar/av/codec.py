"""Audio codecs behind one interface, and the chunked decoder that turns any of them into a stream.

The engine decodes audio block by block as blocks leave the queue, so memory never depends on the video's
length. A codec states how many latents of history (`lookback`) and of future (`lookahead`) a chunk needs; the
`ChunkedStreamDecoder` decodes each chunk with those margins and keeps only the central samples, which makes
the stream equal one-shot decoding (exactly for the tiny codec, up to float rounding for a real one whose
margins cover its receptive field). The tiny codec exists for CPU tests: each latent maps to its own `hop`
samples through a fixed orthonormal basis, so encode(decode(z)) == z and chunking cannot change a bit.

Legend: B batch, C latent channels, N latents, K audio channels (mono 1, stereo 2), S samples (N * hop).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

CONFIG_NAME = "config.json"


class StreamDecoder(Protocol):
    """Decodes consecutive latent chunks of one track; returns the samples that became final."""

    def decode(self, z_BCN: torch.Tensor) -> torch.Tensor:
        ...

    def flush(self) -> torch.Tensor:
        ...


class AudioCodec(Protocol):
    """Waveform <-> latents at `hop` samples per latent (AUDIO_VIDEO.md section 6)."""

    sample_rate: int
    channels: int
    hop: int
    latent_channels: int
    lookback: int  # latents of history a chunk decode needs
    lookahead: int  # latents of future it needs (0 for causal codecs)

    def encode(self, wav_BKS: torch.Tensor) -> torch.Tensor:
        ...

    def decode(self, z_BCN: torch.Tensor) -> torch.Tensor:
        ...

    def stream_decoder(self) -> StreamDecoder:
        ...


class ChunkedStreamDecoder:
    """Streaming decode of any `AudioCodec` by context cropping.

    Latents are emitted once `lookahead` later latents exist (`flush` emits the rest at the end of the track).
    Each decode covers [emitted - lookback, received) and keeps the samples of the newly final latents. The
    concatenated outputs equal `codec.decode(all latents)` when the margins cover the decoder's receptive field."""

    def __init__(self, codec: AudioCodec) -> None:
        self.codec = codec
        self._z_BCN: torch.Tensor | None = None  # latents [kept_from, received)
        self.kept_from = 0
        self.received = 0
        self.emitted = 0

    def decode(self, z_BCN: torch.Tensor) -> torch.Tensor:
        """Append latents; return samples [B, K, hop * newly final latents] (possibly empty)."""
        self._z_BCN = z_BCN if self._z_BCN is None else torch.cat([self._z_BCN, z_BCN], dim=2)
        self.received += z_BCN.shape[2]
        return self._emit(self.received - self.codec.lookahead)

    def flush(self) -> torch.Tensor:
        """Samples of every latent not yet emitted (the track has ended: no more future)."""
        return self._emit(self.received)

    def _emit(self, ready: int) -> torch.Tensor:
        if self._z_BCN is None:
            raise ValueError("flush() before any latents were decoded")
        if ready <= self.emitted:
            b = self._z_BCN.shape[0]
            return self._z_BCN.new_zeros(b, self.codec.channels, 0)
        start = max(0, self.emitted - self.codec.lookback)
        wav = self.codec.decode(self._z_BCN[:, :, start - self.kept_from:])
        hop = self.codec.hop
        out = wav[:, :, (self.emitted - start) * hop:(ready - start) * hop]
        self.emitted = ready
        keep = max(0, self.emitted - self.codec.lookback)
        self._z_BCN = self._z_BCN[:, :, keep - self.kept_from:]
        self.kept_from = keep
        return out

    def state_dict(self) -> dict:
        """History, pending latents and counters: what a checkpoint needs to resume the track."""
        z = None if self._z_BCN is None else self._z_BCN.clone()
        return {"z": z, "kept_from": self.kept_from, "received": self.received, "emitted": self.emitted}

    def load_state_dict(self, state: dict) -> None:
        self._z_BCN = None if state["z"] is None else state["z"].clone()
        self.kept_from, self.received, self.emitted = state["kept_from"], state["received"], state["emitted"]


@dataclass(frozen=True)
class TinyCodecConfig:
    """Shape of the tiny codec; `frequencies` are DCT-II indices (k * sr / (2 * hop) Hz), one per latent
    channel per audio channel, default spread evenly over the band."""

    sample_rate: int = 16000
    hop: int = 500
    channels: int = 1
    latent_channels: int = 16
    frequencies: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        per = self.latent_channels // max(self.channels, 1)
        if self.channels < 1 or per * self.channels != self.latent_channels:
            raise ValueError(f"latent_channels={self.latent_channels} must be a multiple of channels={self.channels}")
        if per > self.hop:
            raise ValueError(f"{per} latent channels per audio channel exceed hop={self.hop}")
        freqs = tuple(self.frequencies) or tuple(round((i + 1) * self.hop / (per + 1)) for i in range(per))
        if len(freqs) != per or len(set(freqs)) != per or not all(0 <= f < self.hop for f in freqs):
            raise ValueError(f"frequencies must be {per} distinct DCT indices in [0, {self.hop}), got {freqs}")
        object.__setattr__(self, "frequencies", freqs)


class TinyAudioCodec(nn.Module):
    """A fixed linear frame codec: latent vector n <-> samples [n*hop, (n+1)*hop) through an orthonormal
    DCT-II basis. Streaming decode equals one-shot decode bit for bit (no lookback, no lookahead)."""

    lookback = 0
    lookahead = 0

    def __init__(self, config: TinyCodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or TinyCodecConfig()
        cfg = self.config
        self.sample_rate, self.hop, self.channels = cfg.sample_rate, cfg.hop, cfg.channels
        self.latent_channels = cfg.latent_channels
        n = torch.arange(cfg.hop, dtype=torch.float64)
        k = torch.tensor(cfg.frequencies, dtype=torch.float64)
        basis = torch.cos(math.pi / cfg.hop * (n[None, :] + 0.5) * k[:, None]) * math.sqrt(2.0 / cfg.hop)
        basis[k == 0] /= math.sqrt(2.0)
        per = len(cfg.frequencies)
        weight = torch.zeros(cfg.latent_channels, cfg.channels, cfg.hop, dtype=torch.float64)
        for ch in range(cfg.channels):
            weight[ch * per:(ch + 1) * per, ch] = basis
        self.register_buffer("basis_CKH", weight.float())

    def encode(self, wav_BKS: torch.Tensor) -> torch.Tensor:
        """[B, K, S] -> [B, C, S // hop] (the tail shorter than one hop is dropped)."""
        b, k, s = wav_BKS.shape
        n = s // self.hop
        frames_BKNH = wav_BKS[:, :, :n * self.hop].reshape(b, k, n, self.hop).float()
        return torch.einsum("bknh,ckh->bcn", frames_BKNH, self.basis_CKH)

    def decode(self, z_BCN: torch.Tensor) -> torch.Tensor:
        """[B, C, N] -> [B, K, N * hop]; an elementwise sum in fixed channel order, so every sample is
        computed by the same float ops however the latents are chunked."""
        b, c, n = z_BCN.shape
        z = z_BCN.float()
        out_BKNH = z.new_zeros(b, self.channels, n, self.hop)
        for ci in range(c):
            out_BKNH = out_BKNH + z[:, ci, None, :, None] * self.basis_CKH[ci, :, None, :]
        return out_BKNH.reshape(b, self.channels, n * self.hop)

    def stream_decoder(self) -> ChunkedStreamDecoder:
        return ChunkedStreamDecoder(self)

    def save_pretrained(self, path: str | Path) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": type(self).__name__, **asdict(self.config)}
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TinyAudioCodec:
        cfg = json.loads((Path(path) / CONFIG_NAME).read_text())
        if cfg.pop("_class_name", cls.__name__) != cls.__name__:
            raise ValueError(f"{path} does not hold a {cls.__name__}")
        cfg["frequencies"] = tuple(cfg.get("frequencies", ()))
        return cls(TinyCodecConfig(**cfg))


def load_codec(kind: str = "tiny", path: str | Path | None = None, subfolder: str | None = None) -> AudioCodec:
    """The codec named by `audio.codec` (tiny: default config unless a directory is given; oobleck: a local
    `AutoencoderOobleck` directory)."""
    if kind == "tiny":
        return TinyAudioCodec.from_pretrained(path) if path else TinyAudioCodec()
    if kind == "oobleck":
        if not path:
            raise ValueError("audio.codec=oobleck needs audio.codec_path")
        from dualpar.av.oobleck import OobleckCodec

        return OobleckCodec.from_pretrained(path, subfolder=subfolder)
    raise ValueError(f"audio.codec={kind!r} is not one of tiny, oobleck")
