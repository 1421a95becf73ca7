"""Per-block audio noise that depends only on (seed, block) (AUDIO_VIDEO.md section 5).

Audio noise must not touch the video's coordinated noise pool or its generator (the video of an `av` job
must equal the `video` job's bit for bit), must be the same whatever the number of stages or launcher, and
must need no generator state in checkpoints. So block k's audio noise comes from its own CPU generator seeded
by a fixed integer mix (splitmix64) of the job seed and k.

Legend: B batch, C audio latent channels, L audio latents.
"""

from __future__ import annotations

import torch

_MASK = (1 << 64) - 1


def mix_seed(seed: int, block: int) -> int:
    """splitmix64 of (seed, block): a 63-bit generator seed; distinct blocks give unrelated streams."""
    x = (seed * 0x9E3779B97F4A7C15 + block * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def audio_block_noise(seed: int, block: int, channels: int, latents: int, batch: int = 1) -> torch.Tensor:
    """Standard normal noise [B, C, L] (float32, CPU) for block `block`'s own audio latents."""
    gen = torch.Generator("cpu").manual_seed(mix_seed(seed, block))
    return torch.randn((batch, channels, latents), generator=gen)
