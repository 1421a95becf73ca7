"""Word tokenizer and prompt encoder: shapes, padding, unknown words, save/load."""

import torch

from dualpar.toyworld.model_dir import new_text_encoder
from dualpar.toyworld.text import WordPromptEncoder


def test_shapes_pad_and_unknown_words(tmp_path):
    enc = new_text_encoder(seed=3)
    tok = enc.tokenizer
    assert enc.dim == 64 and tok.max_length == 16
    ids = tok(["a red ball moving right", "", "a RED zebra ball, moving right."])
    assert ids.shape == (3, 16) and ids.dtype == torch.long
    assert ids[1].eq(0).all()  # empty prompt = all pad
    assert torch.equal(ids[0], ids[2])  # case, punctuation and unknown words ignored
    assert int(ids[0].ne(0).sum()) == 5
    longest = "a small red ball moving right and a big blue square moving up"
    assert int(tok([longest]).ne(0).sum()) == 13
    emb = enc.encode(["a red ball moving right", ""])
    assert emb.shape == (2, 16, 64) and emb.dtype == torch.float32 and not emb.requires_grad
    pad_row = enc.embedder.word.weight[0] + enc.embedder.position
    assert torch.allclose(emb[1], pad_row)


def test_save_load_identical(tmp_path):
    enc = new_text_encoder(seed=1)
    enc.save_pretrained(tmp_path)
    loaded = WordPromptEncoder.from_pretrained(tmp_path)
    prompts = ["a blue square moving up and a small green ball moving left", ""]
    assert torch.equal(loaded.encode(prompts), enc.encode(prompts))
    assert torch.equal(loaded.encode(prompts), loaded.encode(prompts))
