"""Word-level tokenizer and prompt encoder: the toy model's stand-in for Wan's UMT5 text encoder.

It exists because the toy world's captions use a closed vocabulary of a few words: a learned embedding per
word plus a learned position embedding, trained jointly with the transformer, conditions it as well as a
large text encoder would, for a few thousand parameters. Its output is Wan's `encoder_hidden_states`
(`text_dim` wide).

Legend: B batch, L token positions, D embedding width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dualpar.toyworld.world import CAPTION_WORDS

PAD = "<pad>"
DEFAULT_MAX_LENGTH = 16
DEFAULT_DIM = 64


class WordTokenizer:
    """Maps a caption to a fixed-length list of word ids; unknown words are dropped, id 0 is padding."""

    def __init__(self, vocab: list[str] | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.vocab = list(vocab) if vocab is not None else [PAD, *CAPTION_WORDS]
        if self.vocab[0] != PAD:
            raise ValueError(f"vocab[0] must be {PAD!r}")
        self.max_length = int(max_length)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, prompt: str) -> list[int]:
        """Word ids of one prompt, truncated and padded to `max_length`."""
        words = prompt.lower().replace(",", " ").replace(".", " ").split()
        ids = [self.index[w] for w in words if w in self.index and w != PAD][: self.max_length]
        return ids + [0] * (self.max_length - len(ids))

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """LongTensor [B, L]."""
        return torch.tensor([self.ids(p) for p in prompts], dtype=torch.long)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.json").write_text(json.dumps(self.vocab) + "\n")
        (path / "tokenizer_config.json").write_text(
            json.dumps({"_class_name": "WordTokenizer", "max_length": self.max_length}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, **_: object) -> WordTokenizer:
        """Read from a `tokenizer/` folder (or a model directory containing one)."""
        path = Path(path)
        if not (path / "vocab.json").exists() and (path / "tokenizer" / "vocab.json").exists():
            path = path / "tokenizer"
        vocab = json.loads((path / "vocab.json").read_text())
        cfg_path = path / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        return cls(vocab, cfg.get("max_length", DEFAULT_MAX_LENGTH))


class WordEmbedder(nn.Module):
    """Word embedding + learned position embedding: ids [B, L] -> [B, L, D] (the trainable part)."""

    def __init__(self, vocab_size: int, max_length: int = DEFAULT_MAX_LENGTH, dim: int = DEFAULT_DIM) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_length, dim))
        nn.init.normal_(self.word.weight, std=1.0)
        nn.init.normal_(self.position, std=0.1)

    def forward(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return self.word(ids_BL) + self.position[: ids_BL.shape[1]]


class WordPromptEncoder:
    """Prompt strings -> embeddings [B, L, dim]; the empty prompt is all padding (the unconditional input)."""

    def __init__(self, tokenizer: WordTokenizer, embedder: WordEmbedder) -> None:
        self.tokenizer = tokenizer
        self.embedder = embedder.eval()
        self.dim = int(embedder.word.embedding_dim)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """FloatTensor [B, L, dim] on the embedder's device."""
        ids_BL = self.tokenizer(list(prompts)).to(self.embedder.word.weight.device)
        return self.embedder(ids_BL).float()

    def to(self, *args: object, **kwargs: object) -> WordPromptEncoder:
        """Move the embedding tables (like nn.Module.to); returns self."""
        self.embedder.to(*args, **kwargs)
        return self

    def save_pretrained(self, model_dir: str | Path) -> None:
        """Write `text_encoder/` and `tokenizer/` into the model directory."""
        model_dir = Path(model_dir)
        te = model_dir / "text_encoder"
        te.mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": "WordPromptEncoder", "vocab_size": len(self.tokenizer),
               "max_length": self.tokenizer.max_length, "dim": self.dim}
        (te / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        state = {k: v.detach().float().contiguous() for k, v in self.embedder.state_dict().items()}
        save_file(state, str(te / "model.safetensors"))
        self.tokenizer.save_pretrained(model_dir / "tokenizer")

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **_: object) -> WordPromptEncoder:
        """Read from the WHOLE model directory (its `text_encoder/` and `tokenizer/` folders)."""
        model_dir = Path(model_dir)
        if model_dir.name == "text_encoder" and not (model_dir / "text_encoder").exists():
            model_dir = model_dir.parent
        cfg = json.loads((model_dir / "text_encoder" / "config.json").read_text())
        tokenizer = WordTokenizer.from_pretrained(model_dir / "tokenizer")
        embedder = WordEmbedder(cfg["vocab_size"], cfg["max_length"], cfg["dim"])
        embedder.load_state_dict(load_file(str(model_dir / "text_encoder" / "model.safetensors")))
        return cls(tokenizer, embedder)
