"""Write and read the toy model's diffusers-layout directory (the shipped `dualpar/assets/toyworld`).

It exists so the toy model loads through exactly the same path as a real Wan checkpoint (model_index.json
naming each component), and so tests can write a random-weight model directory in a fraction of a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dualpar.toyworld.codec import SpaceToDepthCodec
from dualpar.toyworld.text import WordEmbedder, WordPromptEncoder, WordTokenizer

TRANSFORMER_CONFIG: dict = {
    "patch_size": (1, 2, 2), "num_attention_heads": 4, "attention_head_dim": 32, "in_channels": 96,
    "out_channels": 96, "text_dim": 64, "freq_dim": 64, "ffn_dim": 512, "num_layers": 6,
    "rope_max_seq_len": 256,
}

MODEL_INDEX: dict = {
    "_class_name": "WanPipeline",
    "_diffusers_version": "0.42.1",
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["dualpar", "SpaceToDepthCodec"],
    "text_encoder": ["dualpar", "WordPromptEncoder"],
    "tokenizer": ["dualpar", "WordTokenizer"],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
}


@dataclass
class DualparSettings:
    """Contents of `dualpar.json`: how the engine wraps the transformer and its defaults for this model."""

    # raw transformer output is x0; the engine converts to flow v = (z_t - x0) / max(t, x0_min_t)
    prediction: str = "x0"
    x0_min_t: float = 0.05
    height: int = 32
    width: int = 32
    fps: int = 8
    steps: int = 25
    guidance: float = 3.0
    block_latents: int = 4
    context_latents: int = 2
    negative_prompt: str = ""
    default_prompt: str = "a red ball moving right and a blue square moving up"
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def new_transformer(**overrides: object) -> torch.nn.Module:
    """A randomly initialised toy-world WanTransformer3DModel (run G configuration, text-to-video)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**{**TRANSFORMER_CONFIG, **overrides})


def new_text_encoder(seed: int = 0) -> WordPromptEncoder:
    """A randomly initialised prompt encoder with the toy-world vocabulary."""
    tok = WordTokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        emb = WordEmbedder(len(tok), tok.max_length, TRANSFORMER_CONFIG["text_dim"])
    return WordPromptEncoder(tok, emb)


def write_scheduler(path: Path, kind: str = "euler") -> None:
    """Flow-matching scheduler with shift 1 (the toy model is trained without a timestep shift)."""
    if kind == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).save_pretrained(str(path))
    elif kind == "unipc":
        from diffusers import UniPCMultistepScheduler

        UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                num_train_timesteps=1000).save_pretrained(str(path))
    else:
        raise ValueError(f"scheduler kind {kind!r} not in ('euler', 'unipc')")


def write_model_dir(path: str | Path, transformer: torch.nn.Module, codec: SpaceToDepthCodec,
                    text_encoder: WordPromptEncoder, settings: DualparSettings | None = None,
                    scheduler: str = "euler", dtype: torch.dtype = torch.float32) -> Path:
    """Write the complete diffusers-layout model directory; returns its path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    index = dict(MODEL_INDEX)
    if scheduler == "unipc":
        index["scheduler"] = ["diffusers", "UniPCMultistepScheduler"]
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if dtype == torch.float32:
        transformer.save_pretrained(str(path / "transformer"))
    else:  # only the shipped copy is cast; the caller's module stays fp32
        import copy

        copy.deepcopy(transformer).to(dtype).save_pretrained(str(path / "transformer"))
    codec.save_pretrained(path / "vae")
    text_encoder.save_pretrained(path)
    write_scheduler(path / "scheduler", scheduler)
    settings = settings or DualparSettings()
    (path / "dualpar.json").write_text(json.dumps(settings.to_json(), indent=2) + "\n")
    return path


@dataclass
class ToyModel:
    """The loaded components of a toy model directory."""

    transformer: torch.nn.Module
    codec: SpaceToDepthCodec
    text_encoder: WordPromptEncoder
    settings: dict


def read_model_dir(path: str | Path) -> ToyModel:
    """Load transformer (fp32, eval), codec, prompt encoder and dualpar.json settings."""
    from diffusers import WanTransformer3DModel

    path = Path(path)
    tr = WanTransformer3DModel.from_pretrained(str(path / "transformer"), torch_dtype=torch.float32).eval()
    settings = json.loads((path / "dualpar.json").read_text())
    codec = SpaceToDepthCodec.from_pretrained(path / "vae")
    return ToyModel(tr, codec, WordPromptEncoder.from_pretrained(path), settings)


def default_model_dir() -> Path:
    """Where the shipped toy model lives inside the package."""
    return Path(__file__).resolve().parent.parent / "assets" / "toyworld"
