"""diffusers' SkyReelsV2Transformer3DModel (SkyReels-V2 diffusion forcing) driven from outside as a pipeline stage.

SkyReels-V2's diffusion-forcing checkpoints are Wan-shaped DiTs trained with one noise level per latent frame.
That is what the block queue produces: a window [last C latents of block k-1 | P own latents] holds two
blocks at different noise levels (docs/algorithm.md, "SkyReels-V2 diffusion forcing"). So a `SkyReelsStage`
conditions every token on its own frame's timestep (`frame_conditions`, the `FrameLevelStage` extension of
the backbone interface) instead of one timestep per row, and adds the checkpoint's fps embedding
(`inject_sample_info`) exactly as `SkyReelsV2Transformer3DModel.forward` does with `enable_diffusion_forcing`.

Everything else is Wan's: the module layout and names (`blocks`, `condition_embedder`, `patch_embedding`,
`norm_out`, `proj_out`, `scale_shift_table`) are the same, so the stage reuses `WanStage`'s slicing, shard-only
loading, compile and cache plumbing, and `WindowAttnProcessor` serves SkyReels' self-attention unchanged
(same projections, K-norm and interleaved RoPE; the feature cache appends raw right-context K/V at
window-local positions). The model code itself is diffusers' (built on the meta device and sliced), never
copied. Causal block attention (`num_frame_per_block` > 1) and image conditioning are refused before any
weights load (`dualpar.models.support`).

Legend: B batch rows, F window latent frames, S window tokens, D model width, C_lat latent channels.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_skyreels_v2 import (
    SkyReelsV2RotaryPosEmbed,
    SkyReelsV2Transformer3DModel,
)
from torch import nn

from dualpar.models.adapter import PassContext
from dualpar.models.wan import WanStage

SKYREELS_TRANSFORMER = "SkyReelsV2Transformer3DModel"
SKYREELS_DF_PIPELINE = "SkyReelsV2DiffusionForcingPipeline"


def fps_class(fps: int) -> int:
    """The fps embedding's index, as SkyReelsV2DiffusionForcingPipeline derives it (16 fps -> 0, else 1)."""
    return 0 if int(fps) == 16 else 1


class SkyReelsStage(WanStage):
    """One contiguous slice of a SkyReels-V2 DiT's layers plus the shared parts its pipeline role needs, with
    per-frame (diffusion-forcing) timestep conditioning."""

    frame_levels = True  # conditions take one timestep per window frame (`frame_conditions`)

    model_class = SkyReelsV2Transformer3DModel
    rope_class = SkyReelsV2RotaryPosEmbed

    def take_extra_parts(self, full: nn.Module) -> None:
        self.inject_sample_info = bool(self.config.get("inject_sample_info", False))
        if self.inject_sample_info:  # conditioning: every stage recomputes it locally
            self.fps_embedding = full.fps_embedding
            self.fps_projection = full.fps_projection

    def owned_prefixes(self) -> tuple[str, ...]:
        prefixes = super().owned_prefixes()
        if self.inject_sample_info:
            prefixes += ("fps_embedding.", "fps_projection.")
        return prefixes

    def conditions(self, timestep_B: torch.Tensor, text_BLD: torch.Tensor):
        """Not used: a diffusion-forcing stage is conditioned per frame (`frame_conditions`)."""
        raise TypeError("SkyReelsStage is conditioned per frame: call frame_conditions (FrameLevelStage)")

    def frame_conditions(
        self, timestep_BF: torch.Tensor, text_BLD: torch.Tensor, fps: int, tokens_per_frame: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(temb [B, S, D], timestep projection [B, 6, S, D], projected text) for rows whose window frames have
        the noise levels `timestep_BF`, exactly as SkyReelsV2Transformer3DModel.forward with
        enable_diffusion_forcing=True and the pipeline's fps embedding (per row: diffusers broadcasts one
        row's fps over the frames, which is the same values for the batch of one it runs)."""
        temb, timestep_proj, text_proj, _ = self.condition_embedder(timestep_BF, text_BLD, None)
        timestep_proj = timestep_proj.unflatten(-1, (6, -1))  # [B, F, 6, D]
        b, f = timestep_BF.shape
        if self.inject_sample_info:
            index = torch.full((b,), fps_class(fps), dtype=torch.long, device=timestep_proj.device)
            fps_proj = self.fps_projection(self.fps_embedding(index)).unflatten(1, (6, -1))  # [B, 6, D]
            timestep_proj = timestep_proj + fps_proj.unsqueeze(1)
        temb = temb[:, :, None].expand(b, f, tokens_per_frame, -1).flatten(1, 2)
        timestep_proj = timestep_proj[:, :, None].expand(b, f, tokens_per_frame, 6, -1).flatten(1, 2)
        return temb, timestep_proj.transpose(1, 2).contiguous(), text_proj

    def run_layers(self, hidden_BSD, text_proj, timestep_proj, ctx: PassContext) -> torch.Tensor:
        with self.pass_context(ctx):
            for i in self.layer_ids:  # no causal mask: full attention within the window (num_frame_per_block 1)
                hidden_BSD = self.blocks[str(i)](hidden_BSD, text_proj, timestep_proj, None, None)
        return hidden_BSD

    def head(self, hidden_BSD: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Output norm with per-token shift/scale, projection and unpatchify -> [B, C_lat, F, h, w]."""
        table = self.scale_shift_table.to(temb.device)
        shift, scale = (table.unsqueeze(2) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.squeeze(1), scale.squeeze(1)
        hidden = (self.norm_out(hidden_BSD.float()) * (1 + scale) + shift).type_as(hidden_BSD)
        hidden = self.proj_out(hidden)
        p_t, p_h, p_w = self.config["patch_size"]
        f, h, w = grid
        b = hidden.shape[0]
        hidden = hidden.reshape(b, f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
        hidden = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)
