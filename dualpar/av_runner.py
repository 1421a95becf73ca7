"""One pipeline stage of an `av` job: the video stage's layers with the audio tower's layers beside them.

Layer l of both towers and fusion l live on the same stage (AUDIO_VIDEO.md section 2), so `build_audio_stage`
materialises only the audio tensors of the stage's layer range (plus the patch embedding on the first stage
and the head on the last), exactly as `build_stage` does for the video. `AVStageRunner` runs one window of
both modalities: messages between stages are (video hidden states, audio hidden states), and the last stage
returns (video velocity of the block's own frames, audio velocity of its own audio latents), each guided with
its own scale. The video arithmetic is the `video` job's, so with fusion at its initial zeros the video is
bit-identical to it.

It sits beside `dualpar.runner`, outside the `dualpar.av` package: the job layout (`dualpar.job`) reads the
pure audio layout from `dualpar.av`, and this runner needs the job and the video runner, so inside the package
it would make `job` and `av` import each other.

Legend: B batch rows, Sv video tokens, Sa audio slots, Dv/Da widths, C_a audio latent channels.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dualpar.av.branch import CONFIG_NAME, AudioBranchConfig, AudioTower, check_tower_config
from dualpar.av.cache import FeatureCache
from dualpar.av.fusion import AVLayerInputs, AVPassCache, run_av_layers
from dualpar.av.guidance import fusion_strength, guided
from dualpar.av.layout import AVLayout
from dualpar.job import JobLayout
from dualpar.models import tiny
from dualpar.models.adapter import BackboneStage
from dualpar.models.loader import cast_state, read_owned_tensors
from dualpar.runner import StageRunner
from dualpar.schedule.blockwise import WorkItem
from dualpar.transport.base import Message, TensorSpec

AUDIO_PREFIX = "audio."  # namespace of the tower's seeded random weights (distinct from the video's names)


def audio_branch_config(job: JobLayout) -> AudioBranchConfig:
    av = _av(job)
    return AudioBranchConfig.from_wan(
        job.info.transformer, av.codec.latent_channels, av.audio.width_ratio, av.audio.fusion_every
    )


def build_audio_stage(job: JobLayout, video: BackboneStage, dtype: torch.dtype, device: torch.device) -> AudioTower:
    """The audio tower with only this stage's tensors materialised (the rest stay on the meta device)."""
    av = _av(job)
    cfg = audio_branch_config(job)
    with torch.device("meta"):
        tower = AudioTower(cfg)
    owned = tower.owned_prefixes(list(video.layer_ids), video.first, video.last)
    names = [k for k, _ in tower.named_parameters() if k.startswith(owned)]
    audio = av.audio
    if audio.init == "checkpoint":
        folder = Path(str(audio.checkpoint))
        check_tower_config(AudioBranchConfig(**json.loads((folder / CONFIG_NAME).read_text())), cfg, folder)
        state = read_owned_tensors(folder, owned)
    else:
        state = {k: _random_tensor(audio.init_seed, k, tuple(tower.get_parameter(k).shape)) for k in names}
    missing = sorted(set(names) - set(state))
    if missing:
        raise ValueError(f"audio tower weights lack {len(missing)} tensors, e.g. {missing[:3]}")
    tower.load_state_dict(cast_state(state, dtype, device), strict=False, assign=True)
    if audio.init == "from_video":  # the stage's own video blocks and the shared condition embedder
        tower.init_from_video({i: video.blocks[str(i)] for i in video.layer_ids}, video.condition_embedder)
    return tower.eval().requires_grad_(False)


def _random_tensor(seed: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Seeded per (seed, name) like the video presets; fusion output projections start at exact zeros."""
    if ".a2v.out." in name or ".v2a.out." in name:
        return torch.zeros(shape)
    return tiny.init_tensor(seed, AUDIO_PREFIX + name, torch.Size(shape))


def _av(job: JobLayout) -> AVLayout:
    if job.av is None:
        raise ValueError("an audio stage needs job=av")
    return job.av


class AVStageRunner(StageRunner):
    """Runs block passes of both modalities through one stage (video `BackboneStage` + its `AudioTower` slice)."""

    def __init__(
        self,
        stage: BackboneStage,
        tower: AudioTower,
        job: JobLayout,
        text_embeds_NLD: torch.Tensor,
        timesteps: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ):
        super().__init__(stage, job, text_embeds_NLD, timesteps, dtype, device)
        self.tower = tower
        self.av = _av(job)
        self.audio_blocks, self.fusions = tower.stage_modules(list(stage.layer_ids))
        self.cache = FeatureCache()
        # Fusion strength per row only matters with the no-fusion row; None keeps the plain path.
        self.strength = None
        if job.sync_guidance is not None:
            full = dict(zip(job.branches, fusion_strength(len(job.branches), device)))
            self.strength = [torch.stack([full[b] for b in part]) for part in self.parts]
        self._ropes: dict[int, tuple] = {}

    @classmethod
    def message_specs(cls, job: JobLayout, dtype: torch.dtype) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The video messages followed by the audio ones: hidden [rows, slots, D_a], output [1, C_a, slots]."""
        av = _av(job)
        hidden, output = super().message_specs(job, dtype)
        rows = len(job.micro_batches[0])
        audio_hidden = TensorSpec((rows, av.slots, audio_branch_config(job).dim), dtype)
        audio_output = TensorSpec((1, av.codec.latent_channels, av.slots), torch.float32)
        return (*hidden, audio_hidden), (*output, audio_output)

    def unpad_output(self, item: WorkItem, out: Message) -> Message:
        n_audio = len(self.av.own_audio(item.block))
        return (*super().unpad_output(item, out[:1]), out[1][:, :, :n_audio])

    def _window_inputs(self, block: int):
        """(time RoPE of video, of audio, audio validity) of `block`'s window: a few distinct layouts per job."""
        if block not in self._ropes:
            if len(self._ropes) > 8:
                self._ropes.clear()
            win = self.av.window(block)
            time_v, time_a = win.time_ropes(self.tower.config.head_dim, self.job.tokens_per_frame, self.device)
            valid = win.window_audio_valid()
            self._ropes[block] = (win, time_v, time_a, None if valid is None else valid.to(self.device))
        return self._ropes[block]

    @torch.no_grad()
    def forward(self, item: WorkItem, x: Message, part: int = 0) -> Message | None:
        """One pass of both towers for micro-batch `part`: (video, audio) window latents on the first stage or
        hidden states after it -> hidden states, or on the last stage the guided velocities of the block's own
        video and audio (None until the pass's last micro-batch has been through)."""
        self.begin_pass(item, part)
        if not item.has_right and part == 0:  # the audio side of the feature cache starts empty too
            self.cache.reset()
        text, timestep = self._row_inputs(item, part)
        with self.span("conditions", item):
            temb_v, tproj_v, text_v = self.stage.conditions(timestep, text)
            temb_a, tproj_a, text_a = self.tower.conditions(timestep, text)
        if self.stage.first:
            with self.span("embed", item):
                h_v = self.embed_video(x[0])
                z_a = x[1].to(device=self.device, dtype=self.dtype).expand(self.batch, -1, -1)
                h_a = self.tower.embed_tokens(z_a)
        else:
            h_v, h_a = x
        win, time_v, time_a, valid = self._window_inputs(item.block)
        strength = self.strength[part] if self.strength is not None else None
        inp = AVLayerInputs(text_v, text_a, tproj_v, tproj_a, time_v, time_a, None, strength, valid)
        pc = None
        if self.use_cache:
            pc = AVPassCache(
                self.cache,
                win.video_store_tokens(self.job.tokens_per_frame),
                win.audio_store_tokens(),
                use=item.has_right,
                tag="+".join(self.parts[part]),
            )
        with self.stage.pass_context(self._context(item, part)):
            h_v, h_a = run_av_layers(
                list(self.stage.layer_ids),
                self.stage.layer_blocks(),
                self.audio_blocks,
                self.fusions,
                h_v,
                h_a,
                inp,
                pc,
            )
        if not self.stage.last:
            return h_v, h_a
        with self.span("head", item):
            raw = self.gather_parts(part, (self.video_head(h_v, temb_v), self.tower.head(h_a, temb_a)))
            if raw is None:
                return None
            sync = self.job.sync_guidance
            return self.video_output(item, raw[0], sync), self._audio_output(item, raw[1], sync)

    def _audio_output(self, item: WorkItem, a: torch.Tensor, sync: float | None) -> torch.Tensor:
        """Audio guidance over the head's rows and the block's own audio latents' velocity [1, C_a, n_own]."""
        if self.job.use_cfg:
            a = guided(a[0:1], a[1:2], self.av.audio.guidance, a[2:3] if sync is not None else None, sync)
        off = self.av.left_audio(item.block)
        return a[:, :, off : off + len(self.av.own_audio(item.block))].float()
