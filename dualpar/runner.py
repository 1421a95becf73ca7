"""Per-pass compute of one pipeline stage: conditions, embedding, its layers, head and guidance.

The same code runs on every stage; which parts run depends on the stage's role. Inputs per pass come from
the shared plan (block, step) and the broadcast text embeddings, so stages never exchange anything but
hidden states (stage j -> j+1) and the guided output of the block's own frames (last stage -> stage 0).

Legend: B batch rows (cond[, uncond]), S window tokens, D width, C_lat latent channels, F frames.
"""

from __future__ import annotations

import torch

from dualpar.attention.base import AttnCall
from dualpar.job import JobLayout
from dualpar.models.wan import PassContext, WanStage
from dualpar.schedule.blockwise import WorkItem
from dualpar.transport.base import Message, TensorSpec


class StageRunner:
    """Runs block passes through one WanStage."""

    def __init__(
        self,
        stage: WanStage,
        job: JobLayout,
        text_embeds_NLD: torch.Tensor,
        timesteps: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.stage = stage
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
        self.rope_k = tuple(
            t.to(device) for t in stage.rope_tables(geo.window_latents + geo.context_latents, h, w)
        )
        self.use_cache = job.cfg.schedule.feature_cache and geo.context_latents > 0

    @property
    def batch(self) -> int:
        return len(self.job.branches)

    def hidden_spec(self) -> tuple[TensorSpec, ...]:
        """Layout of the hidden-state messages between stages (static for the whole job)."""
        shape = (self.batch, self.q_grid[0] * self.job.tokens_per_frame, self.stage_width)
        return (TensorSpec(shape, self.dtype),)

    @property
    def stage_width(self) -> int:
        return self.job.info.hidden_dim

    def output_spec(self) -> tuple[TensorSpec, ...]:
        """Layout of the returned own-frame output (block 0's P+C frames is the largest), float32."""
        h, w = self.job.latent_hw
        return (TensorSpec((1, int(self.job.info.transformer["out_channels"]), self.q_grid[0], h, w), torch.float32),)

    def pad_output(self, out: Message) -> Message:
        """The last stage's output padded to the static `output_spec` (frames axis 2)."""
        return tuple(_pad_axis2(t, spec.shape) for t, spec in zip(out, self.output_spec()))

    def unpad_output(self, item: WorkItem, out: Message) -> Message:
        """Inverse of `pad_output` on stage 0: the block's own frames only."""
        return (out[0][:, :, : len(self.job.geometry.own_range(item.block))],)

    def _context(self, item: WorkItem) -> PassContext:
        tpf = self.job.tokens_per_frame
        geo = self.job.geometry
        off = geo.own_offset(item.block)
        capture = slice(off * tpf, (off + geo.context_latents) * tpf) if self.use_cache else None
        call = AttnCall(
            layer=-1,
            block=item.block,
            step=item.step,
            num_steps=self.job.plan.steps,
            branches=self.job.branches,
            q_grid=self.q_grid,
            kv_grid=self.q_grid,
            seed=self.job.cfg.seed,
        )
        return PassContext(
            self.rope_q, self.rope_k, use_cache=self.use_cache and item.has_right, capture=capture, call=call
        )

    def _conditions(self, item: WorkItem):
        text, timestep = self._row_inputs(item)
        return self.stage.conditions(timestep, text)

    def _row_inputs(self, item: WorkItem) -> tuple[torch.Tensor, torch.Tensor]:
        """(text embeddings [B, L, D], timestep [B]) of the window's batch rows."""
        rows = self.job.branch_texts(item.block)
        return self.text_embeds[rows], self.timesteps[item.step].expand(len(rows)).to(self.device)

    def begin_pass(self, item: WorkItem) -> None:
        if not item.has_right:  # the tail opens an iteration: the feature cache starts empty
            for proc in self.stage.processors:
                proc.backend.begin_iteration()

    @torch.no_grad()
    def forward(self, item: WorkItem, x: Message) -> Message:
        """One pass: stage input (window latents on the first stage, hidden states otherwise) -> stage output
        (hidden states, or on the last stage the guided output of the block's own frames, float32)."""
        self.begin_pass(item)
        temb, timestep_proj, text_proj = self._conditions(item)
        hidden = self.embed_video(x[0]) if self.stage.first else x[0]
        hidden = self.stage.run_layers(hidden, text_proj, timestep_proj, self._context(item))
        if not self.stage.last:
            return (hidden,)
        return (self.video_output(item, self.video_head(hidden, temb)),)

    def embed_video(self, window_BCFHW: torch.Tensor) -> torch.Tensor:
        window = window_BCFHW.to(device=self.device, dtype=self.dtype).expand(self.batch, -1, -1, -1, -1)
        return self.stage.embed(window)

    def video_head(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.stage.head(hidden, temb, (self.q_grid[0], *self.job.latent_hw))

    def video_output(self, item: WorkItem, out: torch.Tensor, sync_scale: float | None = None) -> torch.Tensor:
        """Guidance over the head's rows and the block's own frames [1, C_lat, F_own, h, w] float32 (last
        stage). `sync_scale`: sync guidance with a third, no-fusion row (`av` jobs)."""
        if self.job.use_cfg:
            cond, uncond = out[0:1], out[1:2]
            guided = uncond + self.job.cfg.schedule.guidance * (cond - uncond)
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
