"""Coordinated noise: every process derives the same per-block noise from the seed alone.

One pool of P+C latent noise frames is drawn first:
    torch.randn((1, z_dim, P+C, H/s, W/s), generator=torch.Generator("cpu").manual_seed(seed))
and is block 0's noise. For each later block the same generator draws perm = randperm(P) and
    pool = cat(pool[-C:], pool[:P][perm]);  noise = pool[-P:]
so no noise frame repeats inside a window while the same noise content recurs through the video.
The generator state travels in checkpoints, so a resumed job continues the exact sequence.
"""

from __future__ import annotations

import torch


class CoordinatedNoise:
    """The noise pool of docs/algorithm.md ("Coordinated noise initialisation")."""

    def __init__(
        self,
        seed: int,
        z_dim: int,
        block_latents: int,
        context_latents: int,
        height: int,
        width: int,
        coordinated: bool = True,
    ):
        self.coordinated = coordinated  # False (ablation): every later block draws fresh noise instead
        self.block_latents = block_latents
        self.context_latents = context_latents
        self.generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, z_dim, block_latents + context_latents, height, width)
        self.pool_BCFHW = torch.randn(shape, generator=self.generator)
        self.blocks_drawn = 0

    def next_block(self) -> torch.Tensor:
        """Noise for the next block: P+C frames for block 0, P frames afterwards (float32, CPU)."""
        p, c = self.block_latents, self.context_latents
        if self.blocks_drawn > 0 and not self.coordinated:
            fresh = torch.randn(self.pool_BCFHW[:, :, :p].shape, generator=self.generator)
            self.pool_BCFHW = torch.cat([self.pool_BCFHW[:, :, p:], fresh], dim=2)
        elif self.blocks_drawn > 0:
            perm = torch.randperm(p, generator=self.generator)
            shuffled = self.pool_BCFHW[:, :, :p][:, :, perm]
            # pool[:, :, p:] is the last C frames; with C == 0 it is empty and the pool is just reshuffled.
            self.pool_BCFHW = torch.cat([self.pool_BCFHW[:, :, p:], shuffled], dim=2)
        self.blocks_drawn += 1
        if self.blocks_drawn == 1:
            return self.pool_BCFHW.clone()
        return self.pool_BCFHW[:, :, c:].clone()

    def state_dict(self) -> dict:
        return {
            "pool": self.pool_BCFHW.clone(),
            "generator": self.generator.get_state(),
            "blocks_drawn": self.blocks_drawn,
        }

    def load_state_dict(self, state: dict) -> None:
        self.pool_BCFHW = state["pool"].clone()
        self.generator.set_state(state["generator"])
        self.blocks_drawn = int(state["blocks_drawn"])
