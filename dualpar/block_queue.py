"""Stage 0's state of the block queue: every in-flight block's latents, solver and step count.

It assembles each pass's window ([last C latents of block k-1 | block k's own latents]) from an exact,
counted version of the left neighbour (docs/algorithm.md "Left context state"), so the result never depends on
when a velocity arrived, and applies returned velocities through the block's own scheduler. Everything here
is what a checkpoint must hold (see `state_dict`).

Device discipline: latents, their previous versions and every solver's tensors live on stage 0's compute
device (`device`), where the velocities arrive; noise is drawn on the CPU (so CPU and GPU runs draw the same
numbers) and moved there once per block. A solver's constant schedule tables (timesteps, sigmas) stay on the
host: it reads 0-d scalars from them, which CUDA takes from host memory without a sync, while the state it
builds from samples and velocities (past outputs, last sample) is on the device. Only checkpoints
(`state_dict`, always on the host) and outputs leave the device.

Legend: C_lat latent channels, F latent frames, h/w latent height/width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from dualpar.schedule.blockwise import BlockGeometry, WorkItem
from dualpar.schedule.noise import CoordinatedNoise


def left_updates(item: WorkItem, left_context: str) -> int:
    """Solver updates block k-1 has had in the left context of `item`'s window: `ahead` one more than block k
    (its latest update), `same` as many (block k's own noise level). Stage 0 assembles the window from that
    version; a per-frame-conditioned backbone (SkyReels-V2) is told that version's noise level on every stage."""
    return item.step + 1 if left_context == "ahead" else item.step


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
        device: torch.device | str = "cpu",
        first_frame: torch.Tensor | None = None,
        channel_condition: torch.Tensor | None = None,
    ):
        self.device = torch.device(device)
        # image= (Wan2.2 TI2V-5B): the condition latent [1, C_lat, 1, h, w] that stands for latent frame 0 in
        # block 0's windows and in its finished latents (dualpar.models.conditioning); derived from the image
        # again on a resume, never checkpointed
        self.first_frame = None if first_frame is None else first_frame.to(self.device, torch.float32)
        # Wan2.1 I2V: [1, 4 + C_lat, total latents, h, w] frame mask and condition latents, appended to every
        # window's channels at the window's own latent frames (the model's input only; never stepped)
        self.channel_condition = None if channel_condition is None else channel_condition.to(self.device)
        self.geometry = geometry
        self.noise = noise
        self.template = copy.deepcopy(scheduler_template)
        if hasattr(self.template, "set_begin_index"):  # every block starts at step 0: no per-block lookup of
            self.template.set_begin_index(0)  # the timestep in the schedule (a device sync on CUDA)
        self.timesteps = timesteps
        self.sigmas = sigmas
        self.left_context = left_context
        self.prediction = prediction
        self.x0_min_t = x0_min_t
        self.blocks: dict[int, BlockState] = {}
        # the solver's schedule tables (host-resident in every copy of the template)
        self.tables = frozenset(k for k, v in vars(scheduler_template).items() if isinstance(v, torch.Tensor))

    @classmethod
    def for_job(cls, job, scheduler, device: torch.device | str = "cpu", **kwargs: Any) -> BlockQueue:
        """Stage 0's queue for `job` (a JobLayout) with `scheduler` (timesteps set) as every block's solver."""
        h, w = job.latent_hw
        geo = job.geometry
        cfg = job.cfg
        channels = int(job.info.transformer["out_channels"])
        noise = CoordinatedNoise(
            cfg.seed, channels, geo.block_latents, geo.context_latents, h, w, coordinated=cfg.schedule.coordinated_noise
        )
        return cls(
            geo,
            noise,
            scheduler,
            scheduler.timesteps,
            scheduler.sigmas,
            cfg.schedule.left_context,
            job.info.prediction,
            job.info.x0_min_t,
            device=device,
            **kwargs,
        )

    def new_state(self, noise: torch.Tensor) -> BlockState:
        """A fresh block state: `noise` (drawn on the CPU) moved to the compute device, a fresh solver there."""
        return BlockState(noise.to(self.device), 0, copy.deepcopy(self.template))

    def join(self, block: int) -> None:
        self.blocks[block] = self.new_state(self.noise.next_block())

    def finish(self, block: int) -> tuple[torch.Tensor, ...]:
        """The finished block's final latents; its state stays as left context until its successor leaves."""
        self.blocks.pop(block - 1, None)
        return (self.with_first_frame(block, self.blocks[block].latents),)

    def with_first_frame(self, block: int, own: torch.Tensor) -> torch.Tensor:
        """Block `block`'s own latents with latent frame 0 replaced by the image condition (block 0 only), as
        WanImageToVideoPipeline's `(1 - mask) * condition + mask * latents`."""
        if block != 0 or self.first_frame is None:
            return own
        return torch.cat([self.first_frame.to(own.dtype), own[:, :, 1:]], dim=2)

    def left_version(self, item: WorkItem) -> int:
        """How many updates the left neighbour's context has in `item`'s window (`ahead`: one more)."""
        return left_updates(item, self.left_context)

    def window(self, item: WorkItem) -> tuple[torch.Tensor, ...]:
        """([1, C_lat, P+C, h, w],): the window for `item` (block 0: its own P+C frames)."""
        own = self.with_first_frame(item.block, self.blocks[item.block].version(item.step))
        c = self.geometry.context_latents
        if item.block == 0 or c == 0:
            return (self.with_channel_condition(item.block, own),)
        left = self.blocks[item.block - 1].version(self.left_version(item))
        return (self.with_channel_condition(item.block, torch.cat([left[:, :, -c:], own], dim=2)),)

    def with_channel_condition(self, block: int, window: torch.Tensor) -> torch.Tensor:
        """The window with Wan2.1 I2V's condition channels of its latent frames appended (else unchanged)."""
        if self.channel_condition is None:
            return window
        frames = self.geometry.window_range(block)
        cond = self.channel_condition[:, :, frames.start : frames.stop].to(window.dtype)
        return torch.cat([window, cond], dim=1)

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
        """Everything a checkpoint holds, on the host (the live state stays on the device)."""
        return {"noise": self.noise.state_dict(), "blocks": states_to_host(self.blocks)}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict`: the saved state moved back to the compute device."""
        self.noise.load_state_dict(state["noise"])
        self.blocks = states_from_host(state["blocks"], self.device, self.tables)


def to_device(obj: Any, device: torch.device) -> Any:
    """`obj` with every tensor in it on `device` (tensors and plain lists, tuples and dicts of them)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if type(obj) in (list, tuple):
        return type(obj)(to_device(v, device) for v in obj)
    if type(obj) is dict:
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def solver_to_device(solver: Any, device: torch.device, keep: frozenset[str] = frozenset()) -> Any:
    """A shallow copy of a solver (a diffusers scheduler) whose tensors (past model outputs, last sample, ...)
    are on `device`, except the attributes named in `keep`; its config holds no tensors."""
    moved = copy.copy(solver)
    moved.__dict__.update({k: to_device(v, device) for k, v in vars(solver).items() if k not in keep})
    return moved


def states_to_host(states: dict[int, BlockState]) -> dict:
    """Block states as checkpoint data on the CPU (latents, previous version, update count, solver)."""
    cpu = torch.device("cpu")
    return {
        k: {
            "latents": s.latents.to(cpu),
            "previous": to_device(s.previous, cpu),
            "updates": s.updates,
            "scheduler": solver_to_device(s.scheduler, cpu),
        }
        for k, s in states.items()
    }


def states_from_host(states: dict, device: torch.device, tables: frozenset[str]) -> dict[int, BlockState]:
    """Inverse of `states_to_host`: block states on `device` (the solvers' schedule `tables` stay on the host)."""
    return {
        int(k): BlockState(
            v["latents"].to(device),
            int(v["updates"]),
            solver_to_device(v["scheduler"], device, tables),
            to_device(v["previous"], device),
        )
        for k, v in states.items()
    }
