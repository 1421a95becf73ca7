"""Model presets and what a job needs to know about a model before any weights load.

`read_model_info` reads only JSON config files (model_index.json, transformer/, vae/, text_encoder/,
scheduler/, dualpar.json), so the job can be validated and planned up front; weights are loaded later by
`dualpar.models.loader`, each rank reading only its own tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dualpar.errors import ConfigError
from dualpar.models import tiny
from dualpar.models.support import check_supported


@dataclass(frozen=True)
class CodecInfo:
    """Shape facts of the latent codec: channels, strides, and whether latent 0 decodes to a single frame."""

    z_dim: int
    temporal_stride: int
    spatial_stride: int
    causal_first_frame: bool


@dataclass(frozen=True)
class ModelInfo:
    """Everything about a model that validation and planning need, read without weights."""

    name: str
    path: Path | None
    transformer: dict[str, Any]
    codec: CodecInfo
    scheduler_class: str
    scheduler_config: dict[str, Any]
    components: dict[str, tuple[str, str]]
    text_dim: int
    max_sequence_length: int
    prediction: str = "flow"  # flow: the DiT returns Wan's flow velocity; x0: it returns the clean sample
    x0_min_t: float = 0.05
    defaults: dict[str, Any] = field(default_factory=dict)
    init_seed: int | None = None  # random-weight presets built in memory
    # Transformer subfolders, high-noise expert first: Wan2.2 A14B has ("transformer", "transformer_2") and
    # switches at boundary_ratio x num_train_timesteps (dualpar.models.support).
    experts: tuple[str, ...] = ("transformer",)
    boundary_ratio: float | None = None
    # Wan2.2 TI2V-5B (model_index.json expand_timesteps): per-token timesteps, so `image=` conditions latent
    # frame 0 with the first-frame latent at timestep 0 (dualpar.models.conditioning).
    expand_timesteps: bool = False

    @property
    def diffusion_forcing(self) -> bool:
        """SkyReels-V2 diffusion forcing: one noise level per latent frame (dualpar.models.skyreels)."""
        return self.transformer.get("_class_name") == "SkyReelsV2Transformer3DModel"

    @property
    def image_channels(self) -> bool:
        """Wan2.1 I2V: the transformer takes the noise plus a 4-channel frame mask and the image's condition
        latents (in_channels > out_channels) and CLIP image tokens (dualpar.models.conditioning)."""
        return int(self.transformer["in_channels"]) != int(self.transformer["out_channels"])

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def boundary_timestep(self) -> float | None:
        """Timesteps >= this run the high-noise expert, the rest the low-noise one (WanPipeline's rule)."""
        if self.boundary_ratio is None:
            return None
        return self.boundary_ratio * int(self.scheduler_config.get("num_train_timesteps", 1000))

    def expert_for(self, timestep: Any) -> int:
        """Index into `experts` of the expert that denoises at `timestep` (a scheduler timestep, compared as
        WanPipeline compares it: `t >= boundary_timestep` picks the first)."""
        boundary = self.boundary_timestep
        return 0 if boundary is None or bool(timestep >= boundary) else 1

    @property
    def num_layers(self) -> int:
        return int(self.transformer["num_layers"])

    @property
    def patch_size(self) -> tuple[int, int, int]:
        p = self.transformer["patch_size"]
        return int(p[0]), int(p[1]), int(p[2])

    @property
    def pixel_multiple(self) -> int:
        """Height and width must be multiples of this (codec stride x patch size)."""
        return self.codec.spatial_stride * self.patch_size[1]

    def tokens_per_frame(self, height: int, width: int) -> int:
        m = self.pixel_multiple
        return (height // m) * (width // m)

    @property
    def hidden_dim(self) -> int:
        return int(self.transformer["num_attention_heads"]) * int(self.transformer["attention_head_dim"])


_TINY_DEFAULTS = {
    "prompt": "a tiny test video",
    "negative_prompt": "",
    "frames": 33,
    "height": 64,
    "width": 64,
    "fps": 16,
    "steps": 4,
    "block_latents": 2,
    "context_latents": 1,
    "guidance": 5.0,
}

_WAN_DEFAULTS = {
    "prompt": "A cat walks on the grass, realistic",
    "negative_prompt": "",
    "frames": 129,
    "height": 480,
    "width": 832,
    "fps": 16,
    "steps": 50,
    "block_latents": 8,
    "context_latents": 8,
    "guidance": 5.0,
}

WAN_PRESETS = {
    "wan2.1-t2v-1.3b": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "skyreels-v2-df-1.3b": "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
    "wan2.1-t2v-14b": "Wan-AI/Wan2.1-T2V-14B-Diffusers",
    "wan2.2-t2v-a14b": "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
    "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
}
BUILTIN_PRESETS = ("tiny", "small")
PACKAGED_PRESETS = ("toyworld",)
PRESETS = BUILTIN_PRESETS + PACKAGED_PRESETS + tuple(WAN_PRESETS)


def _wan_vae_codec(vae_cfg: dict[str, Any]) -> CodecInfo:
    down = list(vae_cfg.get("temperal_downsample", [False, True, True]))
    patch = vae_cfg.get("patch_size") or 1
    return CodecInfo(
        z_dim=int(vae_cfg.get("z_dim", 16)),
        temporal_stride=2 ** sum(bool(d) for d in down),
        spatial_stride=(2 ** len(down)) * int(patch),
        causal_first_frame=True,
    )


def _wan_components(tokenizer: str) -> dict[str, tuple[str, str]]:
    """The model_index components of a Wan text-to-video pipeline (the presets built without a directory)."""
    return {
        "transformer": ("diffusers", "WanTransformer3DModel"),
        "vae": ("diffusers", "AutoencoderKLWan"),
        "text_encoder": ("transformers", "UMT5EncoderModel"),
        "tokenizer": ("transformers", tokenizer),
        "scheduler": ("diffusers", "UniPCMultistepScheduler"),
    }


def builtin_info(name: str, init_seed: int) -> ModelInfo:
    """The random-weight presets built in memory: `tiny` (tests) and `small` (benchmarks)."""
    transformer = dict(tiny.TINY_TRANSFORMER if name == "tiny" else tiny.SMALL_TRANSFORMER)
    return ModelInfo(
        name=name,
        path=None,
        transformer=transformer,
        codec=_wan_vae_codec(tiny.TINY_VAE),
        scheduler_class="UniPCMultistepScheduler",
        scheduler_config=dict(tiny.TINY_SCHEDULER),
        components=_wan_components("ByT5Tokenizer"),
        text_dim=int(transformer["text_dim"]),
        max_sequence_length=16,
        defaults=dict(_TINY_DEFAULTS),
        init_seed=init_seed,
    )


def packaged_model_dir(name: str) -> Path:
    """Directory of a model shipped inside the package (dualpar/assets/<name>)."""
    return Path(str(resources.files("dualpar") / "assets" / name))


def _read_json(path: Path, key: str, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(key, f"{path} is missing", f"point {key} at a diffusers-format directory that has {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(key, f"{path} is not valid JSON ({err})", "restore the file from the checkpoint") from err
    if not isinstance(data, dict):
        raise ConfigError(key, f"{path} holds a JSON {type(data).__name__}, not an object", "restore the file")
    return data


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def _codec_info(root: Path, entry: tuple[str, str], key: str) -> CodecInfo:
    library, class_name = entry
    if library == "diffusers":
        return _wan_vae_codec(_read_json(root / "vae" / "config.json", key, "vae/config.json"))
    from dualpar.models.components import resolve_component

    codec = resolve_component(library, class_name).from_pretrained(root / "vae")
    return CodecInfo(codec.z_dim, codec.temporal_stride, codec.spatial_stride, codec.causal_first_frame)


def read_directory_info(name: str, root: Path, key: str = "model.path") -> ModelInfo:
    """Read a diffusers Wan-layout directory's configs (no weights); a config that lacks a needed entry or
    gives it a wrong type is a ConfigError naming `key`."""
    try:
        return _read_directory_info(name, root, key)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(
            key,
            f"a config file in {root} lacks or garbles an entry ({type(err).__name__}: {err})",
            "restore the directory's JSON files from the original checkpoint",
        ) from err


def _read_directory_info(name: str, root: Path, key: str) -> ModelInfo:
    if not root.is_dir():
        raise ConfigError(key, f"{root} is not a directory", "give the local diffusers checkpoint directory")
    index = _read_json(root / "model_index.json", key, "model_index.json")
    components = {k: tuple(v) for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[0]}
    for needed in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        if needed not in components:
            raise ConfigError(key, f"model_index.json names no {needed}", "use a complete Wan diffusers directory")
    transformers = {
        folder: _read_json(root / folder / "config.json", key, f"{folder}/config.json")
        for folder in ("transformer", "transformer_2")
        if folder in components
    }
    vae_cfg = None
    if components["vae"][0] == "diffusers":
        vae_cfg = _read_json(root / "vae" / "config.json", key, "vae/config.json")
    experts = check_supported(index, transformers, vae_cfg)  # refuse what cannot run exactly, before weights
    for folder in experts.folders:
        if not _has_weights(root / folder):
            raise ConfigError(key, f"{folder}/ holds no .safetensors weights", "download the full checkpoint")
    transformer = transformers["transformer"]
    scheduler = _read_json(root / "scheduler" / "scheduler_config.json", key, "scheduler/scheduler_config.json")
    extra = _read_json(root / "dualpar.json", key, "dualpar.json") if (root / "dualpar.json").is_file() else {}
    defaults = dict(_WAN_DEFAULTS)
    if transformer.get("_class_name") == "SkyReelsV2Transformer3DModel":
        defaults["fps"] = 24  # SkyReelsV2DiffusionForcingPipeline's default: the checkpoints' frame rate
    for extra_key, value in extra.items():
        field_name = extra_key.removeprefix("default_")  # dualpar.json may say "default_prompt" or "prompt"
        if field_name in _WAN_DEFAULTS:
            defaults[field_name] = value
    return ModelInfo(
        name=name,
        path=root,
        transformer=transformer,
        codec=_codec_info(root, components["vae"], key),
        scheduler_class=str(scheduler["_class_name"]),
        scheduler_config=scheduler,
        components=components,
        text_dim=int(transformer["text_dim"]),
        max_sequence_length=int(extra.get("max_sequence_length", 512)),
        prediction=str(extra.get("prediction", "flow")),
        x0_min_t=float(extra.get("x0_min_t", 0.05)),
        defaults=defaults,
        experts=experts.folders,
        boundary_ratio=experts.boundary_ratio,
        expand_timesteps=bool(index.get("expand_timesteps")),
    )


# The Wan checkpoints' transformer/config.json entries that differ between sizes (the rest: _WAN_TRANSFORMER):
# enough to plan a Wan job (plan_only=true) before its weights are downloaded.
_WAN_SIZES = {
    "wan2.1-t2v-1.3b": {"num_layers": 30, "num_attention_heads": 12, "ffn_dim": 8960},
    "wan2.1-t2v-14b": {"num_layers": 40, "num_attention_heads": 40, "ffn_dim": 13824},
    "wan2.2-t2v-a14b": {"num_layers": 40, "num_attention_heads": 40, "ffn_dim": 13824},  # each of two experts
    "wan2.2-ti2v-5b": {
        "num_layers": 30,
        "num_attention_heads": 24,
        "ffn_dim": 14336,
        "in_channels": 48,
        "out_channels": 48,
    },
}
# TI2V-5B: the 48-channel VAE (4x16x16 with its patch size 2) and per-token timesteps (model_index.json)
_WAN_TI2V_VAE = {"z_dim": 48, "patch_size": 2}
_WAN_BOUNDARY = {"wan2.2-t2v-a14b": 0.875}  # published model_index.json boundary_ratio of the two-expert presets
_WAN_TRANSFORMER = {
    "_class_name": "WanTransformer3DModel",
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "freq_dim": 256,
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}


def wan_plan_info(name: str) -> ModelInfo:
    """A Wan preset's shape without its directory: what `plan_only=true` needs (nothing can load from it)."""
    transformer = {**_WAN_TRANSFORMER, **_WAN_SIZES[name]}
    return ModelInfo(
        name=name,
        path=None,
        transformer=transformer,
        codec=_wan_vae_codec(_WAN_TI2V_VAE if name == "wan2.2-ti2v-5b" else {}),
        scheduler_class="UniPCMultistepScheduler",
        scheduler_config=dict(tiny.TINY_SCHEDULER),
        components=_wan_components("T5TokenizerFast"),
        text_dim=int(transformer["text_dim"]),
        max_sequence_length=512,
        defaults=dict(_WAN_DEFAULTS),
        experts=("transformer", "transformer_2") if name in _WAN_BOUNDARY else ("transformer",),
        boundary_ratio=_WAN_BOUNDARY.get(name),
        expand_timesteps=name == "wan2.2-ti2v-5b",
    )


def read_model_info(name: str, path: str | None, init_seed: int = 0, plan_only: bool = False) -> ModelInfo:
    """Resolve `model=<name>` and `model.path` to a ModelInfo, or raise ConfigError naming the key. With
    `plan_only`, a Wan preset needs no `model.path` (its shape is known; nothing is loaded)."""
    if not path and plan_only and name in _WAN_SIZES:
        return wan_plan_info(name)
    if path:
        return read_directory_info(name, Path(path).expanduser())
    if name in BUILTIN_PRESETS:
        return builtin_info(name, init_seed)
    if name in PACKAGED_PRESETS:
        root = packaged_model_dir(name)
        if not (root / "model_index.json").is_file():
            raise ConfigError("model", f"the packaged model {name!r} is missing from this install", "reinstall")
        return read_directory_info(name, root, key="model")
    if name in WAN_PRESETS:
        raise ConfigError(
            "model.path",
            f"model={name} needs its weights, which are not downloaded automatically",
            f"download {WAN_PRESETS[name]} and pass model.path=<that directory>",
        )
    raise ConfigError("model", f"unknown model {name!r}", f"use one of {', '.join(PRESETS)} or set model.path")
