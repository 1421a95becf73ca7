"""Model sizes and FLOP counts for the performance model.

The simulator needs a Wan DiT's shape (layers, width, heads, FFN width), its parameter counts (memory) and
how many FLOPs one layer-pass costs for a given number of query and key tokens. Presets cover Wan2.1-1.3B
and 14B; `from_diffusers_config` builds the same numbers from a `WanTransformer3DModel` config dict, so the
tiny CPU models used in tests are modelled by the same code.

FLOP legend (per batch element, multiply-add = 2 FLOPs): Lq query tokens (the window), Lk self-attention
keys (Lq, plus C*tpf cached right-context keys), Lt text tokens, d width, f FFN width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Elementwise work per token and channel (norms, modulation, gates, residuals, RoPE). Counted as FLOPs so
# that tiny models are not modelled as free; negligible for the real sizes.
ELEMENTWISE_FLOPS_PER_TOKEN_CHANNEL = 30
# Wan causal VAE decoder FLOPs per output pixel-frame (3x3x3 convs: 96 ch at full resolution, 192 at 1/2,
# 384 at 1/4 and 1/8; counted from the diffusers AutoencoderKLWan layout, about 8 MFLOP).
VAE_DECODE_FLOPS_PER_PIXEL = 8.0e6
# UMT5-XXL encoder (Wan's text encoder) and the Wan VAE, parameters.
UMT5_XXL_ENCODER_PARAMS = 5.68e9
WAN_VAE_PARAMS = 1.27e8


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a Wan-style DiT as far as time and memory are concerned."""

    name: str
    num_layers: int
    dim: int
    heads: int
    ffn_dim: int
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch: tuple[int, int, int] = (1, 2, 2)
    text_tokens: int = 512
    vae_spatial: int = 8
    vae_temporal: int = 4
    text_encoder_params: float = UMT5_XXL_ENCODER_PARAMS
    vae_params: float = WAN_VAE_PARAMS
    trained_latents: int = 21  # Wan2.1 trains on 81 frames = 21 latent frames
    experts: int = 1  # Wan2.2 A14B: 2 experts of this shape; each stage holds both slices, a pass runs one

    @property
    def layer_params(self) -> int:
        """Parameters of one transformer layer (self-attn, cross-attn, FFN, norms, modulation table)."""
        d, f = self.dim, self.ffn_dim
        attn = 2 * (4 * d * d + 4 * d + 2 * d)  # q,k,v,o weights + biases + q/k norm weights, self and cross
        ffn = 2 * d * f + f + d
        return attn + ffn + 2 * d + 6 * d  # cross-attn norm affine + scale_shift_table

    @property
    def patch_volume(self) -> int:
        return self.patch[0] * self.patch[1] * self.patch[2]

    @property
    def embed_params(self) -> int:
        """Patch embedding + condition embedder (time MLP, time projection, text MLP): lives on stage 0."""
        d = self.dim
        patch = self.in_channels * self.patch_volume * d + d
        time = self.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
        text = self.text_dim * d + d + d * d + d
        return patch + time + text

    @property
    def head_params(self) -> int:
        """Output norm modulation + projection: lives on the last stage."""
        return self.dim * self.out_channels * self.patch_volume + self.out_channels * self.patch_volume + 2 * self.dim

    @property
    def total_params(self) -> int:
        """Every expert's weights (what a process holding the whole model keeps in memory)."""
        return (self.num_layers * self.layer_params + self.embed_params + self.head_params) * self.experts

    def tokens_per_frame(self, height: int, width: int) -> int:
        """tpf = (H / vae_stride / patch_h) * (W / vae_stride / patch_w)."""
        sh, sw = self.vae_spatial * self.patch[1], self.vae_spatial * self.patch[2]
        if height % sh or width % sw:
            raise ValueError(f"height/width {height}x{width} must be multiples of {sh}x{sw}")
        return (height // sh) * (width // sw)

    def layer_flops(self, batch: int, q_tokens: int, kv_tokens: int) -> float:
        """One layer-pass: projections of the window only (cached keys are not re-projected)."""
        d, f, lt = self.dim, self.ffn_dim, self.text_tokens
        self_attn = 2 * q_tokens * d * d * 4 + 4 * q_tokens * kv_tokens * d
        cross_attn = 2 * q_tokens * d * d * 2 + 2 * lt * d * d * 2 + 4 * q_tokens * lt * d
        ffn = 2 * q_tokens * d * f * 2
        elementwise = ELEMENTWISE_FLOPS_PER_TOKEN_CHANNEL * q_tokens * d
        return float(batch * (self_attn + cross_attn + ffn + elementwise))

    def embed_flops(self, batch: int, q_tokens: int) -> float:
        """Patch embedding of the window + time and text condition embedders (once per pass)."""
        d = self.dim
        patch = 2 * q_tokens * self.in_channels * self.patch_volume * d
        cond = 2 * (self.freq_dim * d + d * d + 6 * d * d) + 2 * self.text_tokens * (self.text_dim * d + d * d)
        return float(batch * (patch + cond + ELEMENTWISE_FLOPS_PER_TOKEN_CHANNEL * q_tokens * d))

    def head_flops(self, batch: int, q_tokens: int) -> float:
        """Output norm + projection + unpatchify."""
        d = self.dim
        proj = 2 * q_tokens * d * self.out_channels * self.patch_volume
        return float(batch * (proj + ELEMENTWISE_FLOPS_PER_TOKEN_CHANNEL * q_tokens * d))

    @property
    def decode_flops_per_pixel(self) -> float:
        """VAE decode FLOPs per output pixel-frame: the Wan VAE's, scaled by this codec's parameter count (a
        convolutional decoder at a fixed resolution costs about in proportion to its weights; a parameter-free
        codec such as toyworld's space-to-depth costs nothing)."""
        return VAE_DECODE_FLOPS_PER_PIXEL * self.vae_params / WAN_VAE_PARAMS

    def text_encode_flops(self, prompts: int = 2) -> float:
        return 2.0 * self.text_encoder_params * self.text_tokens * prompts


# Named like the `dualpar model=` presets.
WAN21_1_3B = ModelSpec(name="wan2.1-t2v-1.3b", num_layers=30, dim=1536, heads=12, ffn_dim=8960)
WAN21_14B = ModelSpec(name="wan2.1-t2v-14b", num_layers=40, dim=5120, heads=40, ffn_dim=13824)
PRESETS: dict[str, ModelSpec] = {m.name: m for m in (WAN21_1_3B, WAN21_14B)}


def get_model(name: str) -> ModelSpec:
    """A preset by its `dualpar model=` name (`wan2.1-t2v-1.3b`, `wan2.1-t2v-14b`)."""
    key = name.lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[key]


def from_diffusers_config(
    config: Mapping[str, Any],
    name: str = "tiny",
    text_tokens: int = 512,
    text_encoder_params: float = UMT5_XXL_ENCODER_PARAMS,
    vae_params: float = WAN_VAE_PARAMS,
    experts: int = 1,
) -> ModelSpec:
    """ModelSpec from a diffusers `WanTransformer3DModel` config dict (e.g. the tiny CPU model); pass the
    text encoder's and VAE's parameter counts when they are not the real Wan ones."""
    heads = int(config["num_attention_heads"])
    dim = heads * int(config["attention_head_dim"])
    patch = tuple(int(p) for p in config.get("patch_size", (1, 2, 2)))
    in_ch = int(config.get("in_channels", 16))
    return ModelSpec(
        name=name,
        num_layers=int(config["num_layers"]),
        dim=dim,
        heads=heads,
        ffn_dim=int(config["ffn_dim"]),
        in_channels=in_ch,
        out_channels=int(config.get("out_channels") or in_ch),
        text_dim=int(config.get("text_dim", 4096)),
        freq_dim=int(config.get("freq_dim", 256)),
        patch=(patch[0], patch[1], patch[2]),
        text_tokens=text_tokens,
        text_encoder_params=text_encoder_params,
        vae_params=vae_params,
        experts=experts,
    )


def from_model_info(info: Any) -> ModelSpec:
    """ModelSpec of a `dualpar.models.registry.ModelInfo`: the transformer's config, and the parameters of the
    model's own text encoder and VAE (counted from the weight files' headers, or from the built-in presets'
    configs); only a Wan preset planned without its directory falls back to the published UMT5-XXL and Wan
    VAE sizes."""
    return from_diffusers_config(
        info.transformer,
        name=info.name,
        text_tokens=info.max_sequence_length,
        text_encoder_params=_component_params(info, "text_encoder", UMT5_XXL_ENCODER_PARAMS),
        vae_params=_component_params(info, "vae", WAN_VAE_PARAMS),
        experts=int(getattr(info, "num_experts", 1)),
    )


def _component_params(info: Any, folder: str, published: float) -> float:
    if info.path is not None:
        return float(safetensors_numel(info.path / folder))
    if info.init_seed is not None:  # tiny / small: components built from their configs
        import torch

        from dualpar.models import loader

        with torch.device("meta"):
            module = loader.builtin_text_parts(info)[1] if folder == "text_encoder" else loader.builtin_vae(info)
        return float(sum(p.numel() for p in module.parameters()))
    return published


def safetensors_numel(folder: Any) -> int:
    """Elements of every tensor in a folder's .safetensors files, read from their headers (no weights)."""
    import json
    import math
    from pathlib import Path

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total
