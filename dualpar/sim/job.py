"""What to render and how to lay it out: the simulator's job description.

One frozen record holds the video (resolution, frames, steps), the block schedule (P, C, left context) and
the parallel layout (stages, layer split, cfg_split, in-flight bound), so sweeps are `dataclasses.replace`
calls. Derived geometry (tokens per frame, blocks, window tokens, message sizes) reuses the engine's own
plan helpers so the simulator cannot drift from the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpar.schedule.blockwise import BlockPlan, blocks_for_latents, blockwise_plan
from dualpar.sim.model import ModelSpec

SPLIT_MODES = ("even", "cost_aware")
# retire: decode a block as soon as stage 0 applies its last step (with head_wait, at the start of the
# next iteration: what the engine does); interleave: one latent frame before each later item; end: the
# whole video at the end (the published code).
DECODE_POLICIES = ("retire", "interleave", "end")


@dataclass(frozen=True)
class Job:
    """A long-video job and its pipeline layout (config keys in docs/algorithm.md terms)."""

    height: int = 480
    width: int = 832
    frames: int = 1025
    steps: int = 50
    block_latents: int = 8
    context_latents: int = 8
    left_context: str = "ahead"
    stages: int = 8
    split: str | tuple[int, ...] = "even"
    cfg_split: bool = False
    guidance: bool = True
    max_inflight: int = 2
    text_encoder_resident: bool = False
    text_encoder_on_device: bool = True
    decode_at: str = "retire"
    head_wait: bool = False  # the engine retires finished blocks lazily (no per-iteration drain)
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.left_context not in ("ahead", "same"):
            raise ValueError(f"left_context must be 'ahead' or 'same', got {self.left_context!r}")
        if isinstance(self.split, str) and self.split not in SPLIT_MODES:
            raise ValueError(f"parallel.split must be one of {SPLIT_MODES} or a list of layer counts")
        if self.decode_at not in DECODE_POLICIES:
            raise ValueError(f"decode_at must be one of {DECODE_POLICIES}, got {self.decode_at!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0 = never), got {self.checkpoint_every}")
        if self.stages < 1 or self.max_inflight < 1 or self.steps < 1 or self.frames < 1:
            raise ValueError("stages, max_inflight, steps and frames must be >= 1")
        if not 0 <= self.context_latents <= self.block_latents:
            raise ValueError(f"need 0 <= context_latents <= block_latents, got {self.context_latents}")

    @property
    def latents_needed(self) -> int:
        """Wan maps f latents to 4(f-1)+1 frames: the smallest f covering `frames`."""
        return (self.frames - 1 + 3) // 4 + 1

    @property
    def n_blocks(self) -> int:
        return blocks_for_latents(self.latents_needed, self.block_latents, self.context_latents)

    @property
    def total_latents(self) -> int:
        return self.n_blocks * self.block_latents + self.context_latents

    @property
    def window_latents(self) -> int:
        return self.block_latents + self.context_latents

    @property
    def batch(self) -> int:
        """Cond + uncond travel together unless cfg_split (then each micro-batch holds one)."""
        return 1 if (self.cfg_split or not self.guidance) else 2

    @property
    def halves(self) -> int:
        """Micro-batches per block pass."""
        return 2 if (self.cfg_split and self.guidance) else 1

    def plan(self) -> BlockPlan:
        return blockwise_plan(self.n_blocks, self.steps)


@dataclass(frozen=True)
class Geometry:
    """Token counts and message sizes of a job for one model."""

    tpf: int
    q_tokens: int
    right_tokens: int
    latent_hw: int
    hidden_msg_bytes: float
    velocity_msg_bytes: float

    @property
    def kv_tokens_right(self) -> int:
        return self.q_tokens + self.right_tokens


def geometry(job: Job, model: ModelSpec, dtype_bytes: int) -> Geometry:
    """Window tokens, right-context tokens and the two message sizes (hidden states, velocity)."""
    tpf = model.tokens_per_frame(job.height, job.width)
    q = job.window_latents * tpf
    latent_hw = (job.height // model.vae_spatial) * (job.width // model.vae_spatial)
    hidden = job.batch * q * model.dim * dtype_bytes
    velocity = model.out_channels * job.block_latents * latent_hw * 4  # float32, own frames
    return Geometry(
        tpf=tpf,
        q_tokens=q,
        right_tokens=job.context_latents * tpf,
        latent_hw=latent_hw,
        hidden_msg_bytes=float(hidden),
        velocity_msg_bytes=float(velocity),
    )
