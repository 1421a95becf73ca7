"""Per-pass compute of one pipeline stage: conditions, embedding, its layers, head and guidance.

The same code runs on every stage; which parts run depends on the stage's role. Inputs per pass come from
the shared plan (block, step) and the broadcast text embeddings, so stages never exchange anything but
hidden states (stage j -> j+1) and the guided output of the block's own frames (last stage -> stage 0).

Two experts (Wan2.2 A14B): each pass runs the expert its block's step selects (`expert_of_step`, from the
scheduler's timesteps and the directory's boundary, identical on every stage), and the last stage guides
with that expert's scale. A pass reads the feature cache only when its right neighbour ran the same expert
(docs/algorithm.md, "Two experts").

Legend: B batch rows (cond[, uncond]), S window tokens, D width, C_lat latent channels, F frames.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from dualpar.attention.base import AttnCall
from dualpar.block_queue import left_updates
from dualpar.job import JobLayout
from dualpar.models.adapter import BackboneStage, FrameLevelStage, PassContext
from dualpar.models.conditioning import first_frame_timesteps
from dualpar.schedule.blockwise import WorkItem
from dualpar.timeline import Timeline
from dualpar.transport.base import Message, TensorSpec


class StageRunner:
    """Runs block passes through one backbone stage (`BackboneStage`), or through the one of two experts each
    pass selects."""

    def __init__(
        self,
        stage: BackboneStage,
        job: JobLayout,
        text_embeds_NLD: torch.Tensor,
        timesteps: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
        low_noise: BackboneStage | None = None,
    ):
        self.stage = stage  # the (high-noise) expert: shapes and roles are the same for both
        self.experts = (stage,) if low_noise is None else (stage, low_noise)
        assert len(self.experts) == job.info.num_experts, "build_experts gives one stage per expert"
        # The expert of every step, decided once from the shared timesteps: every stage derives the same list.
        self.expert_of_step = tuple(job.info.expert_for(t) for t in timesteps)
        sched = job.cfg.schedule
        low = sched.guidance if sched.guidance_low is None else sched.guidance_low
        self.guidance_scales = (sched.guidance, low)  # WanPipeline: guidance_scale_2 defaults to guidance_scale
        self.job = job
        self.dtype = dtype
        self.device = device
        self.text_embeds = text_embeds_NLD.to(device=device, dtype=dtype)
        self.timesteps = timesteps
        geo = job.geometry
        h, w = job.latent_hw
        _, ph, pw = job.info.patch_size
        self.q_grid = (geo.window_latents, h // ph, w // pw)  # token grid after patchify
        self.rope_q = tuple(t.to(device) for t in stage.rope_tables(geo.window_latents, h, w))
        self.rope_k = tuple(t.to(device) for t in stage.rope_tables(geo.window_latents + geo.context_latents, h, w))
        self.use_cache = job.cfg.schedule.feature_cache and geo.context_latents > 0
        # image= on Wan2.2 TI2V-5B: block 0's first latent frame is the condition, its tokens at timestep 0
        self.condition_tokens = job.tokens_per_frame if job.cfg.image is not None and job.info.expand_timesteps else 0
        self.image_embeds: torch.Tensor | None = None  # Wan2.1 I2V: CLIP image tokens [1, T, D] (set by the worker)
        # SkyReels-V2 diffusion forcing: every window frame is conditioned on its own block's noise level
        self.frame_levels = isinstance(stage, FrameLevelStage) and bool(getattr(stage, "frame_levels", False))
        self.parts = job.micro_batches
        self.timeline: Timeline | None = None  # set by the engine: nested spans per pass
        self._stash: list[Message] = []  # last stage: raw head outputs of a pass's earlier micro-batches

    @property
    def batch(self) -> int:
        """Rows per message (all guidance branches, or one with cfg_split)."""
        return len(self.parts[0])

    @classmethod
    def message_specs(cls, job: JobLayout, dtype: torch.dtype) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """(hidden-state message, returned output message) layouts of `job`, static for the whole job: the one
        source of the transport's buffers and of the report's message sizes. Hidden states: [rows, (P+C)*tpf, D]
        in the model dtype; output: the own frames' guided output padded to P+C frames (block 0's size), float32."""
        rows = len(job.micro_batches[0])  # rows per message (one with cfg_split)
        frames = job.geometry.window_latents
        h, w = job.latent_hw
        hidden = TensorSpec((rows, frames * job.tokens_per_frame, job.info.hidden_dim), dtype)
        output = TensorSpec((1, int(job.info.transformer["out_channels"]), frames, h, w), torch.float32)
        return (hidden,), (output,)

    def hidden_spec(self) -> tuple[TensorSpec, ...]:
        """Layout of the hidden-state messages between stages (static for the whole job)."""
        return self.message_specs(self.job, self.dtype)[0]

    def output_spec(self) -> tuple[TensorSpec, ...]:
        """Layout of the returned own-frame output (block 0's P+C frames is the largest), float32."""
        return self.message_specs(self.job, self.dtype)[1]

    def pad_output(self, out: Message) -> Message:
        """The last stage's output padded to the static `output_spec` (frames axis 2)."""
        return tuple(_pad_axis2(t, spec.shape) for t, spec in zip(out, self.output_spec()))

    def unpad_output(self, item: WorkItem, out: Message) -> Message:
        """Inverse of `pad_output` on stage 0: the block's own frames only."""
        return (out[0][:, :, : len(self.job.geometry.own_range(item.block))],)

    def expert(self, item: WorkItem) -> BackboneStage:
        """The expert that runs `item` (its block's timestep against the boundary)."""
        return self.experts[self.expert_of_step[item.step]]

    def reads_cache(self, item: WorkItem) -> bool:
        """Whether `item` appends the right neighbour's cached K/V: there is one (it ran just before on this
        stage, at step item.step - 1) and the same expert computed it (an expert never attends to keys
        projected by the other expert's weights; see docs/algorithm.md)."""
        if not (self.use_cache and item.has_right):
            return False
        return self.expert_of_step[item.step - 1] == self.expert_of_step[item.step]

    def _context(self, item: WorkItem, part: int = 0) -> PassContext:
        tpf = self.job.tokens_per_frame
        geo = self.job.geometry
        off = geo.own_offset(item.block)
        capture = slice(off * tpf, (off + geo.context_latents) * tpf) if self.use_cache else None
        call = AttnCall(
            layer=-1,
            block=item.block,
            step=item.step,
            num_steps=self.job.plan.steps,
            branches=self.parts[part],
            q_grid=self.q_grid,
            kv_grid=self.q_grid,
            seed=self.job.cfg.seed,
        )
        return PassContext(
            self.rope_q,
            self.rope_k,
            use_cache=self.reads_cache(item),
            capture=capture,
            call=call,
            cache_key="+".join(self.parts[part]),  # micro-batches keep their own feature caches
        )

    def span(self, kind: str, item: WorkItem) -> AbstractContextManager:
        """A timeline span nested in the engine's `compute` span of the same pass (none without a timeline)."""
        return self.timeline.span(kind, item.order) if self.timeline is not None else nullcontext()

    def _conditions(self, item: WorkItem, part: int = 0):
        text, timestep = self._row_inputs(item, part)
        with self.span("conditions", item):
            stage = self.expert(item)
            if self.frame_levels:
                levels = self.window_levels(item).to(self.device).expand(len(timestep), -1)
                assert self.job.cfg.output.fps is not None
                return stage.frame_conditions(levels, text, self.job.cfg.output.fps, self.job.tokens_per_frame)
            if self.image_embeds is not None:  # Wan2.1 I2V: the CLIP image tokens, the same for every row
                return stage.conditions(timestep, text, self.image_embeds.expand(len(timestep), -1, -1))
            return stage.conditions(timestep, text)

    def window_levels(self, item: WorkItem) -> torch.Tensor:
        """The noise level (scheduler timestep) of each of `item`'s P+C window frames [F]: its own frames at
        block k's step; the left context (block k-1's last C latents, block k >= 1) at the level of the version
        stage 0 reads (`left_updates`: `ahead` one step cleaner, `same` the same), 0 once block k-1 is clean.
        Derived from the plan alone, so every stage computes the same levels."""
        geo = self.job.geometry
        levels = self.timesteps[item.step].repeat(geo.window_latents)
        c = geo.context_latents
        if item.block > 0 and c > 0:
            updates = left_updates(item, self.job.cfg.schedule.left_context)
            levels[:c] = self.timesteps[updates] if updates < len(self.timesteps) else 0
        return levels

    def _row_inputs(self, item: WorkItem, part: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(text embeddings [B, L, D], timestep [B]) of micro-batch `part`'s rows."""
        texts = dict(zip(self.job.branches, self.job.branch_texts(item.block)))
        rows = [texts[b] for b in self.parts[part]]
        t = self.timesteps[item.step]
        if item.block == 0 and self.condition_tokens:
            tokens = self.job.geometry.window_latents * self.job.tokens_per_frame
            timestep = first_frame_timesteps(t, len(rows), tokens, self.condition_tokens)
            return self.text_embeds[rows], timestep.to(self.device)
        return self.text_embeds[rows], t.expand(len(rows)).to(self.device)

    def begin_pass(self, item: WorkItem, part: int) -> None:
        if not item.has_right and part == 0:  # the tail opens an iteration: the feature cache starts empty
            for stage in self.experts:
                stage.reset_cache()  # nothing of an earlier iteration is ever read (docs/algorithm.md)
                for proc in stage.processors:
                    proc.backend.begin_iteration()

    @torch.no_grad()
    def forward(self, item: WorkItem, x: Message, part: int = 0) -> Message | None:
        """One pass of micro-batch `part`: stage input (window latents on the first stage, hidden states
        otherwise) -> stage output (hidden states, or on the last stage the guided output of the block's own
        frames, float32; None until the pass's last micro-batch has been through)."""
        self.begin_pass(item, part)
        stage = self.expert(item)
        temb, timestep_proj, text_proj = self._conditions(item, part)
        if stage.first:
            with self.span("embed", item):
                hidden = self.embed_video(x[0], stage)
        else:
            hidden = x[0]
        hidden = stage.run_layers(hidden, text_proj, timestep_proj, self._context(item, part))
        if not stage.last:
            return (hidden,)
        with self.span("head", item):
            raw = self.gather_parts(part, (self.video_head(hidden, temb, stage),))
            return None if raw is None else (self.video_output(item, raw[0]),)

    def gather_parts(self, part: int, raw: Message) -> Message | None:
        """All rows of a pass's raw head outputs once its last micro-batch is in (row order as unsplit)."""
        if len(self.parts) == 1:
            return raw
        self._stash.append(raw)
        if part < len(self.parts) - 1:
            return None
        rows = tuple(torch.cat(ts, dim=0) for ts in zip(*self._stash))
        self._stash.clear()
        return rows

    def embed_video(self, window_1CFHW: torch.Tensor, stage: BackboneStage | None = None) -> torch.Tensor:
        """Patch-embed the window once and share it by every row: the rows' inputs are identical, and a
        Conv3d's result depends on its batch size (oneDNN picks kernels by shape), which would make
        `cfg_split` on and off differ in the last bits."""
        window = window_1CFHW.to(device=self.device, dtype=self.dtype)
        return (stage if stage is not None else self.stage).embed(window).expand(self.batch, -1, -1).contiguous()

    def video_head(self, hidden: torch.Tensor, temb: torch.Tensor, stage: BackboneStage | None = None) -> torch.Tensor:
        return (stage if stage is not None else self.stage).head(hidden, temb, (self.q_grid[0], *self.job.latent_hw))

    def video_output(self, item: WorkItem, out: torch.Tensor, sync_scale: float | None = None) -> torch.Tensor:
        """Guidance over the head's rows and the block's own frames [1, C_lat, F_own, h, w] float32 (last
        stage). `sync_scale`: sync guidance with a third, no-fusion row (`av` jobs)."""
        if self.job.use_cfg:
            cond, uncond = out[0:1], out[1:2]
            scale = self.guidance_scales[self.expert_of_step[item.step]]
            guided = uncond + scale * (cond - uncond)
            if sync_scale is not None:
                guided = guided + (sync_scale - 1.0) * (cond - out[2:3])
            out = guided
        geo = self.job.geometry
        off = geo.own_offset(item.block)
        return out[:, :, off : off + len(geo.own_range(item.block))].float()


def _pad_axis2(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if t.shape[2] == shape[2]:
        return t
    padded = t.new_zeros(shape)
    padded[:, :, : t.shape[2]] = t
    return padded
