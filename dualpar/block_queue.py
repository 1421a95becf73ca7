"""Stage 0's state of the block queue: every in-flight block's latents, solver and step count.

It assembles each pass's window ([last C latents of block k-1 | block k's own latents]) from an exact,
counted version of the left neighbour (ALGORITHM.md "Left context state"), so the result never depends on
when a velocity arrived, and applies returned velocities through the block's own scheduler. Everything here
is what a checkpoint must hold (see `state_dict`).

Legend: C_lat latent channels, F latent frames, h/w latent height/width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from dualpar.schedule.blockwise import BlockGeometry, WorkItem
from dualpar.schedule.noise import CoordinatedNoise


@dataclass
class BlockState:
    """One block's own latents after `updates` solver steps, the previous version, and its solver."""

    latents: torch.Tensor  # [1, C_lat, F_own, h, w] float32
    updates: int
    scheduler: object
    previous: torch.Tensor | None = None  # latents after `updates - 1` steps
    history: list[int] = field(default_factory=list)

    def version(self, updates: int) -> torch.Tensor:
        if updates == self.updates:
            return self.latents
        if updates == self.updates - 1 and self.previous is not None:
            return self.previous
        raise RuntimeError(f"block state after {updates} updates is gone (have {self.updates})")


class BlockQueue:
    """The in-flight blocks of one job on stage 0, plus the last finished block (left context of the head)."""

    def __init__(
        self,
        geometry: BlockGeometry,
        noise: CoordinatedNoise,
        scheduler_template,
        timesteps,
        sigmas,
        left_context: str,
        prediction: str = "flow",
        x0_min_t: float = 0.05,
    ):
        self.geometry = geometry
        self.noise = noise
        self.template = scheduler_template
        self.timesteps = timesteps
        self.sigmas = sigmas
        self.left_context = left_context
        self.prediction = prediction
        self.x0_min_t = x0_min_t
        self.blocks: dict[int, BlockState] = {}

    def join(self, block: int) -> None:
        self.blocks[block] = BlockState(self.noise.next_block(), 0, copy.deepcopy(self.template))

    def finish(self, block: int) -> tuple[torch.Tensor, ...]:
        """The finished block's final latents; its state stays as left context until its successor leaves."""
        self.blocks.pop(block - 1, None)
        return (self.blocks[block].latents,)

    def left_version(self, item: WorkItem) -> int:
        """How many updates the left neighbour's context has in `item`'s window (`ahead`: one more)."""
        return item.step + 1 if self.left_context == "ahead" else item.step

    def window(self, item: WorkItem) -> tuple[torch.Tensor, ...]:
        """([1, C_lat, P+C, h, w],): the window for `item` (block 0: its own P+C frames)."""
        own = self.blocks[item.block].version(item.step)
        c = self.geometry.context_latents
        if item.block == 0 or c == 0:
            return (own,)
        left = self.blocks[item.block - 1].version(self.left_version(item))
        return (torch.cat([left[:, :, -c:], own], dim=2),)

    def apply(self, item: WorkItem, model_out: tuple[torch.Tensor, ...]) -> None:
        """Step block `item.block` with the guided model output for its own frames (`(video,)`)."""
        self.step_video(item, model_out[0])

    def step_video(self, item: WorkItem, model_out: torch.Tensor) -> None:
        state = self.blocks[item.block]
        out = model_out.to(state.latents.dtype)
        if self.prediction == "x0":
            sigma = max(float(self.sigmas[item.step]), self.x0_min_t)
            out = (state.latents - out) / sigma
        self.step_state(state, item, out)

    def step_state(self, state: BlockState, item: WorkItem, velocity: torch.Tensor) -> None:
        """One solver step of `state` with a flow velocity; the previous latents stay as the older version."""
        assert state.updates == item.step, f"block {item.block}: step {item.step} applied after {state.updates}"
        sample = state.latents
        new = state.scheduler.step(velocity.to(sample.dtype), self.timesteps[item.step], sample, return_dict=False)[0]
        state.previous, state.latents = sample, new
        state.updates += 1

    def state_dict(self) -> dict:
        return {
            "noise": self.noise.state_dict(),
            "blocks": {
                k: {
                    "latents": s.latents,
                    "previous": s.previous,
                    "updates": s.updates,
                    "scheduler": s.scheduler,
                }
                for k, s in self.blocks.items()
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.noise.load_state_dict(state["noise"])
        self.blocks = {
            int(k): BlockState(v["latents"], int(v["updates"]), v["scheduler"], v["previous"])
            for k, v in state["blocks"].items()
        }
