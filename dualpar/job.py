"""The pure layout of a job: geometry, plan, prompt timeline and frame accounting, from config and model facts.

Every rank, the planner and the simulator derive the same layout from the same resolved config, so nothing
here is communicated. No weights are touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from dualpar.config import EngineConfig
from dualpar.models.codec import latents_for_frames
from dualpar.models.registry import ModelInfo
from dualpar.plan_split import split_layers
from dualpar.schedule.blockwise import BlockGeometry, BlockPlan, blocks_for_latents, blockwise_plan

if TYPE_CHECKING:
    from dualpar.av.layout import AVLayout


@dataclass(frozen=True)
class JobLayout:
    """What every rank knows about a job before anything runs."""

    cfg: EngineConfig
    info: ModelInfo

    @property
    def frames(self) -> int:
        assert self.cfg.frames is not None
        return self.cfg.frames

    @property
    def latent_hw(self) -> tuple[int, int]:
        s = self.info.codec.spatial_stride
        assert self.cfg.height is not None and self.cfg.width is not None
        return self.cfg.height // s, self.cfg.width // s

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_hw
        _, ph, pw = self.info.patch_size
        return (h // ph) * (w // pw)

    @cached_property
    def geometry(self) -> BlockGeometry:
        s = self.cfg.schedule
        assert s.block_latents is not None and s.context_latents is not None
        codec = self.info.codec
        needed = latents_for_frames(codec.temporal_stride, codec.causal_first_frame, self.frames)
        n = blocks_for_latents(needed, s.block_latents, s.context_latents)
        return BlockGeometry(s.block_latents, s.context_latents, n)

    @cached_property
    def plan(self) -> BlockPlan:
        assert self.cfg.schedule.steps is not None
        return blockwise_plan(self.geometry.n_blocks, self.cfg.schedule.steps)

    @property
    def use_cfg(self) -> bool:
        return (self.cfg.schedule.guidance or 0.0) > 1.0

    @cached_property
    def av(self) -> AVLayout | None:
        """The audio layout of an `av` job (None for video jobs)."""
        if self.cfg.job != "av":
            return None
        from dualpar.av.config import AudioConfig
        from dualpar.av.layout import AVLayout

        assert self.cfg.output.fps is not None
        codec = self.info.codec
        return AVLayout.build(AudioConfig.from_mapping(self.cfg.audio), self.geometry, self.frames,
                              self.cfg.output.fps, codec.temporal_stride, codec.causal_first_frame)

    @property
    def sync_guidance(self) -> float | None:
        """Sync guidance scale of an `av` job (a third, no-fusion batch row), else None."""
        return self.av.audio.sync_guidance if self.av is not None and self.use_cfg else None

    @property
    def branches(self) -> tuple[str, ...]:
        """Batch rows of every window: cond, uncond with guidance, and the no-fusion row of sync guidance."""
        rows = ("cond", "uncond") if self.use_cfg else ("cond",)
        return (*rows, "nofusion") if self.sync_guidance is not None else rows

    @property
    def micro_batches(self) -> tuple[tuple[str, ...], ...]:
        """The rows of each message: all branches at once, or one branch per micro-batch with
        `parallel.cfg_split` (more passes in flight; the last stage combines them)."""
        if self.cfg.parallel.cfg_split and len(self.branches) > 1:
            return tuple((b,) for b in self.branches)
        return (self.branches,)

    def branch_texts(self, block: int) -> list[int]:
        """Index into `texts` of each batch row's prompt for `block`."""
        own = self.block_text[block]
        return [self.negative_text_index if b == "uncond" else own for b in self.branches]

    @cached_property
    def texts(self) -> tuple[str, ...]:
        """Distinct prompts in timeline order, then the negative prompt (encoded once each)."""
        distinct: list[str] = []
        for seg in self.cfg.prompt:
            if seg.text not in distinct:
                distinct.append(seg.text)
        return (*distinct, self.cfg.negative_prompt or "")

    @property
    def negative_text_index(self) -> int:
        return len(self.texts) - 1

    def first_pixel_frame(self, latent: int) -> int:
        """The first pixel frame that latent frame `latent` decodes to."""
        codec = self.info.codec
        if codec.causal_first_frame:
            return 0 if latent == 0 else codec.temporal_stride * (latent - 1) + 1
        return codec.temporal_stride * latent

    @cached_property
    def block_frame_starts(self) -> tuple[int, ...]:
        """Pixel frame where each block's own frames start (clipped to the video length)."""
        return tuple(
            min(self.first_pixel_frame(self.geometry.own_range(k).start), self.frames)
            for k in range(self.geometry.n_blocks)
        )

    @cached_property
    def block_text(self) -> tuple[int, ...]:
        """Index into `texts` of the prompt active at each block's first own frame."""
        out = []
        for start in self.block_frame_starts:
            active = [seg for seg in self.cfg.prompt if seg.frame <= start][-1]
            out.append(self.texts.index(active.text))
        return tuple(out)

    @cached_property
    def stage_layers(self) -> list[range]:
        p = self.cfg.parallel
        costs = None
        if p.split_mode == "cost_aware" and p.stages > 1:
            costs = stage_overheads(p.stages)
        return split_layers(self.info.num_layers, p.stages, list(p.split) if p.split else None, costs)


def stage_overheads(stages: int) -> list[float]:
    """Extra fixed work per stage in layer-equivalents: stage 0 embeds, steps the solver and decodes; the last
    stage runs the head and guidance. Calibrated roughly on CPU runs; the simulator refines it."""
    extra = [0.0] * stages
    extra[0] += 0.6
    extra[-1] += 0.3
    return extra
