"""Stage 0's block queue for `av` jobs: each block carries its video latents and its own audio latents.

The video side is the `video` job's `BlockQueue`, untouched (its noise pool and generator are not drawn from
again), so the video of an `av` job is the `video` job's. Each block also holds its own audio latents with a
solver of their own (one per block and modality), stepped in lockstep with the video, so the counted-version
rule for the left context (`ahead` or `same`) applies to both alike. A window's audio is the left context's
audio (the end of block k-1's own audio) followed by block k's own, padded with zeros to the static slot count.
Audio noise depends only on (seed, block) (`audio_block_noise`), so it needs no generator state in checkpoints.
Like the video's, it is drawn on the CPU and kept on the compute device with its solver (`BlockQueue.new_state`).

Legend: C_a audio latent channels, n audio latents.
"""

from __future__ import annotations

import torch

from dualpar.av.layout import AVLayout
from dualpar.av.noise import audio_block_noise
from dualpar.block_queue import BlockQueue, BlockState, states_from_host, states_to_host
from dualpar.schedule.blockwise import WorkItem


class AVBlockQueue(BlockQueue):
    """`BlockQueue` plus per-block audio latents and solver states."""

    def __init__(self, *args, layout: AVLayout, seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.layout = layout
        self.seed = seed
        self.audio: dict[int, BlockState] = {}

    def join(self, block: int) -> None:
        super().join(block)
        n = len(self.layout.own_audio(block))
        noise = audio_block_noise(self.seed, block, self.layout.codec.latent_channels, n)
        self.audio[block] = self.new_state(noise)

    def finish(self, block: int) -> tuple[torch.Tensor, ...]:
        self.audio.pop(block - 1, None)
        return (*super().finish(block), self.audio[block].latents)

    def window(self, item: WorkItem) -> tuple[torch.Tensor, ...]:
        """(video window, audio window [1, C_a, slots]) for `item`."""
        own = self.audio[item.block].version(item.step)
        n_left = self.layout.left_audio(item.block) if item.block > 0 else 0
        audio = own
        if n_left:
            left = self.audio[item.block - 1].version(self.left_version(item))
            audio = torch.cat([left[:, :, left.shape[2] - n_left :], own], dim=2)
        pad = self.layout.slots - audio.shape[2]
        if pad:
            audio = torch.cat([audio, audio.new_zeros(audio.shape[0], audio.shape[1], pad)], dim=2)
        return (*super().window(item), audio)

    def apply(self, item: WorkItem, model_out: tuple[torch.Tensor, ...]) -> None:
        """Step the block's video and audio with their guided velocities (the audio tower predicts flow)."""
        self.step_video(item, model_out[0])
        self.step_state(self.audio[item.block], item, model_out[1])

    def state_dict(self) -> dict:
        return super().state_dict() | {"audio": states_to_host(self.audio)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.audio = states_from_host(state["audio"], self.device, self.tables)
