"""The audio tower: a Wan-shaped DiT over audio latents that runs beside the video tower (AUDIO_VIDEO.md 2).

It is isomorphic to the video DiT so that `split_layers` cuts both alike and layer l of both towers plus
fusion l share a stage: diffusers' `WanTransformerBlock` at the video's depth and head_dim, width x1.0 (an
Ovi-like twin) or x0.5, a linear patch embedding (patch 1 in time), its own time embedding and text projection
over the same umT5 embeddings, and a Wan-style modulated head. It is built as separable pieces (`embed`,
`blocks[l]`, `fusion[str(l)]`, `head`) so a stage owns a layer range exactly like the video stages; the
fusion modules live here because they are new weights trained with the audio branch.

Legend: B batch, C audio latent channels, L audio latents (= tokens), T text tokens, D audio width.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding, WanTransformerBlock
from torch import nn

from dualpar.av.cache import CachedSelfAttnProcessor
from dualpar.av.fusion import AVFusion
from dualpar.av.rope import TimeRope

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "audio_tower.safetensors"
KEEP_FP32 = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")  # as WanTransformer3DModel


@dataclass(frozen=True)
class AudioBranchConfig:
    """Shape of the audio tower; `from_wan` derives it from a Wan transformer config."""

    latent_channels: int
    num_layers: int
    num_heads: int
    head_dim: int
    ffn_dim: int
    text_dim: int
    video_dim: int  # width of the video tower (fusion's video side)
    freq_dim: int = 256
    eps: float = 1e-6
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    fusion_every: int = 1  # fusion after the text attention of every k-th layer; 0 = none
    fusion_heads: int = 0  # 0: the audio tower's head count

    def __post_init__(self) -> None:
        for name in ("latent_channels", "num_layers", "num_heads", "head_dim", "ffn_dim", "text_dim", "video_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"audio branch {name} must be >= 1, got {getattr(self, name)}")
        if self.fusion_every < 0 or self.fusion_heads < 0:
            raise ValueError("fusion_every and fusion_heads must be >= 0")

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def fused_layers(self) -> tuple[int, ...]:
        """Layers with a fusion sub-layer: every `fusion_every`-th, starting at layer 0."""
        if self.fusion_every == 0:
            return ()
        return tuple(range(0, self.num_layers, self.fusion_every))

    @classmethod
    def from_wan(cls, wan_config: Mapping[str, Any], latent_channels: int, width_ratio: float | str = 1.0,
                 fusion_every: int = 1) -> AudioBranchConfig:
        """Same depth and head_dim as the Wan config; heads and FFN width scaled by `width_ratio`."""
        ratio = Fraction(str(width_ratio))
        heads = ratio * int(wan_config["num_attention_heads"])
        ffn = ratio * int(wan_config["ffn_dim"])
        if ratio <= 0 or heads.denominator != 1 or ffn.denominator != 1:
            raise ValueError(f"audio.width_ratio={width_ratio} must give whole heads and FFN width "
                             f"(heads {wan_config['num_attention_heads']}, ffn_dim {wan_config['ffn_dim']})")
        head_dim = int(wan_config["attention_head_dim"])
        return cls(latent_channels=latent_channels, num_layers=int(wan_config["num_layers"]),
                   num_heads=int(heads), head_dim=head_dim, ffn_dim=int(ffn), text_dim=int(wan_config["text_dim"]),
                   video_dim=int(wan_config["num_attention_heads"]) * head_dim,
                   freq_dim=int(wan_config.get("freq_dim", 256)), eps=float(wan_config.get("eps", 1e-6)),
                   cross_attn_norm=bool(wan_config.get("cross_attn_norm", True)),
                   qk_norm=str(wan_config.get("qk_norm", "rms_norm_across_heads")), fusion_every=fusion_every)


@dataclass(frozen=True)
class AudioEmbedding:
    """Stage 0's audio inputs for one window: tokens, time embedding, its 6-way projection, projected text."""

    x_BLD: torch.Tensor
    temb_BD: torch.Tensor
    tproj_B6D: torch.Tensor
    text_BTD: torch.Tensor


class AudioTower(nn.Module):
    """Embed / layers / fusion / head of the audio branch; attribute names mirror `WanTransformer3DModel`."""

    def __init__(self, config: AudioBranchConfig):
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Linear(config.latent_channels, dim)
        self.condition_embedder = WanTimeTextImageEmbedding(dim=dim, time_freq_dim=config.freq_dim,
                                                            time_proj_dim=6 * dim, text_embed_dim=config.text_dim)
        self.blocks = nn.ModuleList(
            WanTransformerBlock(dim, config.ffn_dim, config.num_heads, config.qk_norm, config.cross_attn_norm,
                                config.eps) for _ in range(config.num_layers))
        for block in self.blocks:
            block.attn1.set_processor(CachedSelfAttnProcessor())
        heads = config.fusion_heads or config.num_heads
        self.fusion = nn.ModuleDict({str(layer): AVFusion(config.video_dim, dim, heads, config.head_dim, config.eps)
                                     for layer in config.fused_layers})
        self.norm_out = FP32LayerNorm(dim, config.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, config.latent_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def conditions(self, timestep_B: torch.Tensor, text_BTE: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(temb [B, D], timestep projection [B, 6, D], projected text [B, T, D]): cheap, so every stage
        recomputes them locally (as `WanStage.conditions`) and only hidden states travel."""
        temb, tproj, text, _ = self.condition_embedder(timestep_B, text_BTE)
        return temb, tproj.unflatten(1, (6, -1)), text

    def embed(self, z_BCL: torch.Tensor, timestep_B: torch.Tensor, text_BTE: torch.Tensor) -> AudioEmbedding:
        """Audio latents -> tokens, plus the window's conditions (stage 0)."""
        return AudioEmbedding(self.embed_tokens(z_BCL), *self.conditions(timestep_B, text_BTE))

    def embed_tokens(self, z_BCL: torch.Tensor) -> torch.Tensor:
        """Audio latents [B, C, L] -> tokens [B, L, D] (patch 1 in time)."""
        return self.patch_embedding(z_BCL.transpose(1, 2).to(self.patch_embedding.weight.dtype)).contiguous()

    def head(self, x_BLD: torch.Tensor, temb_BD: torch.Tensor) -> torch.Tensor:
        """Wan-style modulated output head: tokens -> velocity [B, C, L]."""
        shift, scale = (self.scale_shift_table.to(temb_BD.device) + temb_BD.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x_BLD.float()) * (1 + scale) + shift).type_as(x_BLD)
        return self.proj_out(x).transpose(1, 2)

    def cast(self, dtype: torch.dtype) -> AudioTower:
        """Cast to `dtype` but keep the modules Wan keeps in float32 (time embedder, modulation, norms)."""
        self.to(dtype)
        for name, module in self.named_modules():
            if name.split(".")[-1] in KEEP_FP32:
                module.float()
        for name, param in self.named_parameters():
            if name.split(".")[-1] in KEEP_FP32:
                param.data = param.data.float()
        return self

    def fusion_for(self, layer: int) -> AVFusion | None:
        key = str(layer)
        if key not in self.fusion:  # nn.ModuleDict has no .get
            return None
        return self.fusion[key]

    def stage_modules(self, layer_ids: Sequence[int]) -> tuple[list[nn.Module], list[AVFusion | None]]:
        """Audio blocks and fusion modules of a stage's layers, in the order `run_av_layers` takes them."""
        return [self.blocks[i] for i in layer_ids], [self.fusion_for(i) for i in layer_ids]

    def forward(self, z_BCL: torch.Tensor, timestep_B: torch.Tensor, text_BTE: torch.Tensor,
                rope: TimeRope) -> torch.Tensor:
        """Audio alone (fusion off): the path for audio pretraining and single-tower tests."""
        emb = self.embed(z_BCL, timestep_B, text_BTE)
        x, tables = emb.x_BLD, rope.wan_tables()
        for block in self.blocks:
            x = block(x, emb.text_BTD, emb.tproj_B6D, tables)
        return self.head(x, emb.temb_BD)

    @torch.no_grad()
    def init_from_video(self, video_blocks: Mapping[int, nn.Module] | Sequence[nn.Module],
                        condition_embedder: nn.Module | None = None) -> None:
        """`from_video` init: copy the video blocks (all, or a stage's {layer: block}) and, if given, the
        video condition embedder (time embedding and text projection). Widths must match."""
        if self.config.dim != self.config.video_dim:
            raise ValueError(f"init=from_video needs audio.width_ratio=1.0 (audio {self.config.dim}, "
                             f"video {self.config.video_dim})")
        items = video_blocks.items() if isinstance(video_blocks, Mapping) else enumerate(video_blocks)
        for layer, block in items:
            self.blocks[int(layer)].load_state_dict(block.state_dict())
        if condition_embedder is not None:
            shared = {k: v for k, v in condition_embedder.state_dict().items() if not k.startswith("image_embedder.")}
            self.condition_embedder.load_state_dict(shared)

    def owned_prefixes(self, layer_ids: Sequence[int], first: bool, last: bool) -> tuple[str, ...]:
        """State-dict prefixes a stage needs (as `WanStage.owned_prefixes`): the condition embedder everywhere,
        its layers' blocks and fusion, the patch embedding on the first stage, the head on the last."""
        prefixes = ["condition_embedder."] + [f"blocks.{i}." for i in layer_ids]
        prefixes += [f"fusion.{i}." for i in layer_ids if str(i) in self.fusion]
        if first:
            prefixes.append("patch_embedding.")
        if last:
            prefixes += ["norm_out.", "proj_out.", "scale_shift_table"]
        return tuple(prefixes)

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> AudioTower:
        from safetensors.torch import load_file

        src = Path(path)
        tower = cls(AudioBranchConfig(**json.loads((src / CONFIG_NAME).read_text())))
        tower.load_state_dict(load_file(str(src / WEIGHTS_NAME)))
        return tower


def check_tower_config(stored: AudioBranchConfig, needed: AudioBranchConfig, source: object) -> None:
    """An audio tower checkpoint fits a job when its shape matches (its fusion_every may differ: the job may
    use fusion in fewer layers)."""
    if dataclasses.replace(stored, fusion_every=needed.fusion_every) != needed:
        raise ValueError(f"audio checkpoint {source} has config {stored}; the job needs {needed}")


def build_audio_tower(wan_config: Mapping[str, Any], latent_channels: int, audio: Any,
                      video_blocks: Mapping[int, nn.Module] | Sequence[nn.Module] | None = None,
                      condition_embedder: nn.Module | None = None) -> AudioTower:
    """The audio tower an `av` job asks for (`audio` is a `dualpar.av.config.AudioConfig`): random init,
    copied from the video tower, or loaded from an audio tower directory (checked against the Wan config)."""
    cfg = AudioBranchConfig.from_wan(wan_config, latent_channels, audio.width_ratio, audio.fusion_every)
    if audio.init == "checkpoint":
        tower = AudioTower.from_pretrained(audio.checkpoint)
        check_tower_config(tower.config, cfg, audio.checkpoint)
        return tower
    tower = AudioTower(cfg)
    if audio.init == "from_video":
        if video_blocks is None:
            raise ValueError("init=from_video needs the video blocks")
        tower.init_from_video(video_blocks, condition_embedder)
    return tower
