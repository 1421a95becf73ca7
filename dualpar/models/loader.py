"""Load what each rank needs, and nothing else.

- `build_stage`: a WanStage built on the meta device, then only its own tensors are materialised: read from
  the checkpoint's safetensors (sharded or not) for a directory, or drawn from per-tensor seeds for the
  random-weight presets. RoPE tables are rebuilt (non-persistent buffers). `build_experts` does this for
  every expert of the directory (Wan2.2 A14B: `transformer` and `transformer_2`, the same layer slice).
- `load_prompt_encoder`, `load_codec`, `load_scheduler`: stage 0's text encoder, latent codec and solver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dualpar.models import tiny
from dualpar.models.components import resolve_component
from dualpar.models.registry import ModelInfo
from dualpar.models.skyreels import SKYREELS_TRANSFORMER, SkyReelsStage
from dualpar.models.wan import WanStage
from dualpar.topology import pick_device  # noqa: F401 (the device choice lives in topology; re-exported)

# Wan keeps these in float32 even when the model runs in half precision (diffusers _keep_in_fp32_modules).
_KEEP_FP32 = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def _weight_files(folder: Path, prefixes: tuple[str, ...]) -> dict[Path, list[str]]:
    """Map each safetensors file to the keys in it that start with one of `prefixes`."""
    index = next(iter(folder.glob("*.safetensors.index.json")), None)
    files: dict[Path, list[str]] = {}
    if index is not None:
        for key, fname in json.loads(index.read_text())["weight_map"].items():
            if key.startswith(prefixes):
                files.setdefault(folder / fname, []).append(key)
        return files
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            keys = [k for k in f.keys() if k.startswith(prefixes)]  # noqa: SIM118 (safe_open)
        if keys:
            files[path] = keys
    return files


def read_owned_tensors(folder: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors of `folder`'s safetensors files (sharded or not) whose keys start with one of `prefixes`."""
    state: dict[str, torch.Tensor] = {}
    for path, keys in _weight_files(folder, prefixes).items():
        with safe_open(str(path), framework="pt") as f:
            for key in keys:
                state[key] = f.get_tensor(key)
    return state


def cast_state(state: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors on `device` in `dtype`, except the modules Wan keeps in float32 (time embedder, norms, tables)."""
    out = {}
    for key, value in state.items():
        keep = any(part in key for part in _KEEP_FP32) and value.is_floating_point()
        out[key] = value.to(device=device, dtype=torch.float32 if keep else dtype)
    return out


def build_stage(
    info: ModelInfo,
    layers: range,
    first: bool,
    last: bool,
    dtype: torch.dtype,
    device: torch.device,
    expert: str = "transformer",
) -> WanStage:
    """A WanStage of one expert (the transformer subfolder `expert`) with only its own weights in memory (a
    SkyReelsStage for a SkyReels-V2 diffusion-forcing transformer)."""
    is_skyreels = info.transformer.get("_class_name") == SKYREELS_TRANSFORMER
    stage = (SkyReelsStage if is_skyreels else WanStage)(info.transformer, layers, first, last)
    expected = {k for k, _ in stage.named_parameters()}
    if info.path is None:
        assert info.init_seed is not None
        state = {k: tiny.init_tensor(info.init_seed, k, p.shape) for k, p in stage.named_parameters()}
    else:
        state = read_owned_tensors(info.path / expert, stage.owned_prefixes())
    missing = expected - set(state)
    if missing:
        where = info.path if info.path is None else info.path / expert
        raise ValueError(f"checkpoint {where} lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    stage.load_state_dict(cast_state(state, dtype, device), strict=False, assign=True)
    stage.rope.to(device)
    leftover = [k for k, p in stage.named_parameters() if p.is_meta]
    assert not leftover, f"unmaterialised parameters: {leftover[:3]}"
    return stage.eval().requires_grad_(False)


def build_experts(
    info: ModelInfo, layers: range, first: bool, last: bool, dtype: torch.dtype, device: torch.device
) -> list[WanStage]:
    """This stage's slice of every expert, high-noise first (one for Wan2.1, two for Wan2.2 A14B): the block
    queue runs blocks at different noise levels in one iteration, so a stage needs both at once."""
    return [build_stage(info, layers, first, last, dtype, device, expert) for expert in info.experts]


def build_full_transformer(info: ModelInfo):
    """The whole random-weight transformer (for writing tiny checkpoints and for oracle tests)."""
    from diffusers import WanTransformer3DModel

    stage = build_stage(info, range(info.num_layers), True, True, torch.float32, torch.device("cpu"))
    model = WanTransformer3DModel.from_config(info.transformer)
    model.load_state_dict(stage.state_dict(), strict=False)
    return model.eval().requires_grad_(False)


class UMT5PromptEncoder:
    """Wan's text path: tokenizer + UMT5 encoder, trimmed at each prompt's length and zero-padded,
    exactly like WanPipeline._get_t5_prompt_embeds."""

    def __init__(self, tokenizer: Any, encoder: Any, max_sequence_length: int, device: torch.device):
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.max_sequence_length = max_sequence_length
        self.device = device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        inputs = self.tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device)
        seq_lens = mask.gt(0).sum(dim=1).long()
        embeds = self.encoder(ids, mask).last_hidden_state.float()
        rows = [
            torch.cat([u[:n], u.new_zeros(self.max_sequence_length - int(n), u.size(1))])
            for u, n in zip(embeds, seq_lens)
        ]
        return torch.stack(rows, dim=0)


def builtin_text_parts(info: ModelInfo):
    """Tokenizer and UMT5 encoder of the random-weight presets (offline, seeded)."""
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    assert info.init_seed is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(info.init_seed + 1)
        encoder = UMT5EncoderModel(UMT5Config(**tiny.tiny_text_encoder_config(info.text_dim)))
    return ByT5Tokenizer(), encoder.eval()


def builtin_vae(info: ModelInfo):
    from diffusers import AutoencoderKLWan

    assert info.init_seed is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(info.init_seed + 2)
        return AutoencoderKLWan(**tiny.TINY_VAE).eval()


def load_prompt_encoder(info: ModelInfo, device: torch.device):
    """An object with `.encode(list[str]) -> [B, L, text_dim]` float32."""
    if info.path is None:
        tokenizer, encoder = builtin_text_parts(info)
        return UMT5PromptEncoder(tokenizer, encoder.to(device), info.max_sequence_length, device)
    library, class_name = info.components["text_encoder"]
    if library == "dualpar":
        return resolve_component(library, class_name).from_pretrained(info.path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(info.path / "tokenizer")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    encoder = resolve_component(library, class_name).from_pretrained(info.path / "text_encoder", dtype=dtype)
    return UMT5PromptEncoder(tokenizer, encoder.to(device).eval(), info.max_sequence_length, device)


def load_codec(info: ModelInfo, device: torch.device):
    """The latent codec (see dualpar.models.codec)."""
    from dualpar.models.wan_vae import WanVAECodec

    if info.path is None:
        return WanVAECodec(builtin_vae(info).to(device))
    library, class_name = info.components["vae"]
    cls = resolve_component(library, class_name)
    if library == "dualpar":
        return cls.from_pretrained(info.path / "vae")
    return WanVAECodec(cls.from_pretrained(info.path / "vae", torch_dtype=torch.float32).to(device).eval())


def load_scheduler(info: ModelInfo, flow_shift: float | None):
    """The checkpoint's scheduler class and config (flow_shift overridable)."""
    cls = resolve_component("diffusers", info.scheduler_class)
    config = {k: v for k, v in info.scheduler_config.items() if not k.startswith("_")}
    if flow_shift is not None:
        key = "flow_shift" if "flow_shift" in config or "UniPC" in info.scheduler_class else "shift"
        config[key] = flow_shift
    return cls.from_config(config)
