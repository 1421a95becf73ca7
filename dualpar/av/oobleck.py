"""Stable Audio's `AutoencoderOobleck` (diffusers) as a streamable `AudioCodec`.

Oobleck's decoder is not causal: every output sample depends on latents on both sides. To decode block by
block it is streamed by context cropping (`ChunkedStreamDecoder`) with margins taken from its exact dependency
cone, computed here from the architecture: every intermediate position an output sample reads must lie inside
the chunk, or the chunk's zero padding would leak in. With those margins the stream equals one-shot decoding
up to float rounding; smaller margins trade exactness for latency (`lookback`/`lookahead` overrides).

For the full Stable Audio config (hop 2048 at 44.1 kHz) the cone is 10 latents per side (0.46 s): measured on
that architecture with narrow random channels, streamed minus one-shot is 3e-7 at margins 10, 2e-3 at 6 and
1e-2 at 3 (peak 0.43). The engine therefore emits a block's audio one block late (its lookahead comes from the
next block) and flushes at the end.

Legend: B batch, C latent channels (64), N latents, K audio channels, S samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dualpar.av.codec import ChunkedStreamDecoder

RES_DILATIONS = (1, 3, 9)  # each decoder block's residual units (kernel 7, "same" padding)


def _conv_back(lo: int, hi: int, kernel: int, dilation: int, padding: int) -> tuple[int, int]:
    """Input positions read by outputs [lo, hi] of a stride-1 Conv1d."""
    return lo - padding, hi - padding + dilation * (kernel - 1)


def _conv_t_back(lo: int, hi: int, stride: int, kernel: int, padding: int) -> tuple[int, int]:
    """Input positions read by outputs [lo, hi] of a ConvTranspose1d (out n reads in i with n = i*s - p + m)."""
    return math.ceil((lo + padding - kernel + 1) / stride), math.floor((hi + padding) / stride)


def decoder_cone(upsampling_ratios: Sequence[int], sample: int) -> list[tuple[int, int, int]]:
    """(lo, hi, rate) of the positions output `sample` reads at every layer input, output to latents.

    rate is that layer's samples per latent (hop at the output, 1 at the latents)."""
    hop = math.prod(upsampling_ratios)
    lo, hi, rate = sample, sample, hop
    cone = [(lo, hi, rate)]
    lo, hi = _conv_back(lo, hi, 7, 1, 3)  # conv2
    cone.append((lo, hi, rate))
    for stride in reversed(list(upsampling_ratios)):
        for dilation in reversed(RES_DILATIONS):  # x + conv1x1(conv7(x)): the union is conv7's cone
            lo, hi = _conv_back(lo, hi, 7, dilation, 3 * dilation)
            cone.append((lo, hi, rate))
        lo, hi = _conv_t_back(lo, hi, stride, 2 * stride, math.ceil(stride / 2))
        rate //= stride
        cone.append((lo, hi, rate))
    lo, hi = _conv_back(lo, hi, 7, 1, 3)  # conv1, at the latent rate
    cone.append((lo, hi, rate))
    return cone


def oobleck_margins(upsampling_ratios: Sequence[int]) -> tuple[int, int]:
    """(lookback, lookahead) in latents so that a chunk reproduces one-shot decoding of its central latents.

    For output samples of latent j, a chunk of latents [j - back, j + 1 + ahead) must contain every position
    of the cone at every layer: lo >= (j - back) * rate and hi < (j + 1 + ahead) * rate."""
    hop = math.prod(upsampling_ratios)
    j = 10_000  # far from the track's edges; the cone is periodic in hop
    back = ahead = 0
    for sample in range(j * hop, (j + 1) * hop):
        for lo, hi, rate in decoder_cone(upsampling_ratios, sample):
            back = max(back, j - lo // rate)
            ahead = max(ahead, -(-(hi + 1) // rate) - j - 1)
    return back, ahead


class OobleckCodec:
    """`AutoencoderOobleck` behind `AudioCodec`: latents are the posterior mean; no scaling (as Stable Audio)."""

    def __init__(self, vae: Any, lookback: int | None = None, lookahead: int | None = None) -> None:
        ratios = list(vae.config.downsampling_ratios)
        if any(r % 2 for r in ratios):
            raise ValueError(f"odd up-sampling ratios {ratios} change the decoded length; not supported")
        self.vae = vae
        self.sample_rate = int(vae.config.sampling_rate)
        self.channels = int(vae.config.audio_channels)
        self.latent_channels = int(vae.config.decoder_input_channels)
        self.hop = math.prod(ratios)
        exact_back, exact_ahead = oobleck_margins(ratios[::-1])
        self.lookback = exact_back if lookback is None else int(lookback)
        self.lookahead = exact_ahead if lookahead is None else int(lookahead)

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str | None = None, torch_dtype: torch.dtype | None = None,
                        **margins: int) -> OobleckCodec:
        """Load a local diffusers directory (a Stable Audio checkpoint's `vae/` or a bare VAE directory)."""
        from diffusers import AutoencoderOobleck

        kwargs: Mapping[str, Any] = {"subfolder": subfolder} if subfolder else {}
        vae = AutoencoderOobleck.from_pretrained(str(path), torch_dtype=torch_dtype, **kwargs).eval()
        return cls(vae, **margins)

    @torch.no_grad()
    def encode(self, wav_BKS: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(wav_BKS.to(self.vae.dtype)).latent_dist.mode()

    @torch.no_grad()
    def decode(self, z_BCN: torch.Tensor) -> torch.Tensor:
        """[B, C, N] -> [B, K, N * hop] float32."""
        return self.vae.decode(z_BCN.to(self.vae.dtype)).sample.float()

    def stream_decoder(self) -> ChunkedStreamDecoder:
        return ChunkedStreamDecoder(self)
