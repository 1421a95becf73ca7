"""Which diffusers directories the engine runs exactly, decided from their JSON configs before any weights load.

A directory that looks like Wan but needs something the engine does not do (a 48-channel Wan2.2 VAE with
per-token timestep expansion, image conditioning, SkyReels-V2 diffusion forcing, an unknown transformer class)
would otherwise load and render the wrong video silently. `check_supported` refuses it with a ConfigError
naming `model.path`, what is unsupported and what would be needed; the CLI exits 2.

What it accepts: Wan2.1 text-to-video (one `transformer`), Wan2.2 A14B text-to-video (`transformer` for
timesteps >= boundary_ratio x num_train_timesteps, `transformer_2` below, as diffusers' WanPipeline does) and
Wan2.2 TI2V-5B (`expand_timesteps`: the 48-channel VAE with 4x16x16 compression; text-to-video, or
image-to-video through its first-frame latent, dualpar.models.conditioning). Also SkyReels-V2 diffusion-forcing
text-to-video (`SkyReelsV2DiffusionForcingPipeline` with one `SkyReelsV2Transformer3DModel`, full attention:
`num_frame_per_block` 1; dualpar.models.skyreels); its other variants (image-to-video, video-to-video, the
plain `SkyReelsV2Pipeline`) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dualpar.errors import ConfigError

SUPPORTED_PIPELINES = ("WanPipeline", "SkyReelsV2DiffusionForcingPipeline", "WanImageToVideoPipeline")
SUPPORTED_TRANSFORMER = "WanTransformer3DModel"
# The transformer class each supported pipeline drives.
_TRANSFORMER_OF = {
    "WanPipeline": SUPPORTED_TRANSFORMER,
    "SkyReelsV2DiffusionForcingPipeline": "SkyReelsV2Transformer3DModel",
    "WanImageToVideoPipeline": SUPPORTED_TRANSFORMER,
}
# Pipelines that share Wan's layout but condition or schedule differently: refused by name with the reason.
KNOWN_UNSUPPORTED = {
    "WanVideoToVideoPipeline": "video-to-video",
    "WanVACEPipeline": "VACE control conditioning",
    "WanAnimatePipeline": "Wan-Animate conditioning",
    "SkyReelsV2Pipeline": "SkyReels-V2 text-to-video without diffusion forcing (one timestep per sample)",
    "SkyReelsV2ImageToVideoPipeline": "SkyReels-V2 image-to-video",
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": "SkyReels-V2 diffusion-forcing image-to-video",
    "SkyReelsV2DiffusionForcingVideoToVideoPipeline": "SkyReels-V2 diffusion-forcing video-to-video",
}
# transformer/config.json entries that must agree between the two experts (every pass has one static shape).
_SHAPE_KEYS = (
    "num_layers",
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "patch_size",
    "text_dim",
    "freq_dim",
    "ffn_dim",
    "rope_max_seq_len",
)
_KEY = "model.path"


@dataclass(frozen=True)
class Experts:
    """The transformer subfolders of a directory, high-noise first, and the switch between them."""

    folders: tuple[str, ...]
    boundary_ratio: float | None


def _refuse(problem: str, fix: str) -> ConfigError:
    return ConfigError(_KEY, problem, fix)


def check_supported(
    index: dict[str, Any], transformers: dict[str, dict[str, Any]], vae: dict[str, Any] | None
) -> Experts:
    """Raise ConfigError for a directory the engine cannot run exactly; else its experts.

    `index` is model_index.json, `transformers` maps each present transformer folder to its config.json,
    `vae` is vae/config.json for a diffusers VAE (None for dualpar's own codecs).
    """
    pipeline = str(index.get("_class_name", ""))
    if pipeline in KNOWN_UNSUPPORTED:
        raise _refuse(
            f"the directory is a {pipeline} ({KNOWN_UNSUPPORTED[pipeline]}), which the engine does not run",
            "use a WanPipeline directory (Wan2.1 T2V, Wan2.2 T2V-A14B, or Wan2.2 TI2V-5B with image=)",
        )
    if pipeline not in SUPPORTED_PIPELINES:
        raise _refuse(
            f"model_index.json names the pipeline {pipeline!r}; the engine runs only {', '.join(SUPPORTED_PIPELINES)}",
            "use a Wan text-to-video diffusers directory",
        )
    has_encoder = bool(index.get("image_encoder") and index["image_encoder"][0])
    if pipeline == "WanImageToVideoPipeline":
        _check_i2v(index, transformers, vae, has_encoder)
    elif has_encoder:
        raise _refuse(
            f"model_index.json names an image_encoder but the pipeline is {pipeline}",
            "use the checkpoint's original model_index.json",
        )
    for folder, config in transformers.items():
        if pipeline != "WanImageToVideoPipeline":
            _check_transformer(folder, config, _TRANSFORMER_OF[pipeline])
    if pipeline != "WanPipeline" and "transformer_2" in transformers:
        raise _refuse(
            f"the {pipeline} directory names a transformer_2; SkyReels-V2 has one transformer",
            "use the original SkyReels-V2 DF directory (one transformer/)",
        )
    if vae is not None:
        _check_vae(vae, transformers.get("transformer", {}))
    return _experts(index, transformers)


def _check_i2v(
    index: dict[str, Any], transformers: dict[str, dict[str, Any]], vae: dict[str, Any] | None, has_encoder: bool
) -> None:
    """Wan2.1 I2V: a CLIP image encoder, image tokens in every transformer, and 36 input channels (noise, the
    4-channel frame mask, the condition latents: dualpar.models.conditioning)."""
    if not has_encoder or "transformer_2" in transformers or index.get("expand_timesteps"):
        raise _refuse(
            "the WanImageToVideoPipeline directory has no image_encoder, two experts or expand_timesteps "
            "(Wan2.2 I2V-A14B / TI2V); the engine runs Wan2.1 I2V image-to-video (CLIP image encoder, one transformer)",
            "use Wan2.1 I2V, or Wan2.2 TI2V-5B as a WanPipeline directory with image=",
        )
    z_dim = int((vae or {}).get("z_dim", 16))
    for folder, config in transformers.items():
        if config.get("_class_name") != SUPPORTED_TRANSFORMER or config.get("image_dim") is None:
            raise _refuse(
                f"{folder}/config.json is {config.get('_class_name')!r} with image_dim {config.get('image_dim')}",
                f"use a Wan2.1 I2V directory ({SUPPORTED_TRANSFORMER} with image_dim)",
            )
        want = int(config.get("out_channels", 16)) + z_dim + 4
        if int(config.get("in_channels", 16)) != want:
            raise _refuse(
                f"{folder} takes {config.get('in_channels')} input channels; image-to-video needs {want} "
                "(noise, the 4-channel frame mask and the condition latents)",
                "use the checkpoint's original transformer config",
            )


def _check_transformer(folder: str, config: dict[str, Any], expected: str = SUPPORTED_TRANSFORMER) -> None:
    name = config.get("_class_name")
    if name != expected:
        what = "a SkyReels-V2 transformer" if str(name).startswith("SkyReelsV2") else "an unknown transformer"
        raise _refuse(
            f"{folder}/config.json is {name!r}, {what}; this directory's pipeline drives {expected}",
            f"use a directory whose {folder} is a {expected} (Wan: WanPipeline; SkyReels-V2 DF: "
            "SkyReelsV2DiffusionForcingPipeline)",
        )
    if int(config.get("num_frame_per_block") or 1) != 1:
        raise _refuse(
            f"{folder}/config.json sets num_frame_per_block={config.get('num_frame_per_block')} (causal block "
            "attention), which the engine's windows (full attention plus the right context) do not implement",
            f"set num_frame_per_block to 1 in {folder}/config.json (the SkyReels-V2 DF default)",
        )
    if config.get("image_dim") is not None or config.get("added_kv_proj_dim") is not None:
        raise _refuse(
            f"{folder}/config.json has image_dim/added_kv_proj_dim (image-to-video image tokens), "
            "which the engine does not feed",
            "use a text-to-video directory",
        )
    if int(config.get("in_channels", 16)) != int(config.get("out_channels", 16)):
        raise _refuse(
            f"{folder} takes {config.get('in_channels')} input channels but predicts {config.get('out_channels')} "
            "(extra channels carry image-to-video conditioning)",
            "use a text-to-video directory (in_channels == out_channels)",
        )


def _check_vae(vae: dict[str, Any], transformer: dict[str, Any]) -> None:
    if vae.get("_class_name") != "AutoencoderKLWan":
        raise _refuse(
            f"vae is {vae.get('_class_name')!r}; the engine streams only AutoencoderKLWan",
            "use a Wan directory with its AutoencoderKLWan",
        )
    z_dim, channels = int(vae.get("z_dim", 16)), int(transformer.get("out_channels", 16))  # I2V: out, not in
    if z_dim != channels:
        raise _refuse(
            f"vae has z_dim {z_dim} but the transformer predicts {channels} latent channels",
            "use the VAE of the same checkpoint (Wan2.1/A14B: 16 channels; Wan2.2 TI2V-5B: 48)",
        )


def _experts(index: dict[str, Any], transformers: dict[str, dict[str, Any]]) -> Experts:
    has_2 = "transformer_2" in transformers
    ratio = index.get("boundary_ratio")
    if "transformer" not in transformers:
        raise _refuse(
            "model_index.json names no transformer (a directory with only transformer_2 is not a Wan2.2 A14B)",
            "use a directory with transformer/ (and transformer_2/ for Wan2.2 A14B)",
        )
    if not has_2:
        if ratio is not None:
            raise _refuse(
                f"model_index.json sets boundary_ratio={ratio} but names no transformer_2 (the low-noise expert)",
                "restore transformer_2/ and its model_index.json entry from the Wan2.2 A14B checkpoint",
            )
        return Experts(("transformer",), None)
    if ratio is None:
        raise _refuse(
            "the directory has transformer_2 but model_index.json sets no boundary_ratio, so when to switch "
            "experts is unknown",
            "restore boundary_ratio in model_index.json (Wan2.2 T2V-A14B: 0.875)",
        )
    if not 0.0 < float(ratio) < 1.0:
        raise _refuse(f"boundary_ratio is {ratio}", "restore the checkpoint's boundary_ratio (between 0 and 1)")
    first, second = transformers["transformer"], transformers["transformer_2"]
    differ = [k for k in _SHAPE_KEYS if first.get(k) != second.get(k)]
    if differ:
        raise _refuse(
            f"transformer and transformer_2 differ in {', '.join(differ)}; the engine needs two experts of one shape",
            "use the matching Wan2.2 A14B experts",
        )
    return Experts(("transformer", "transformer_2"), float(ratio))
