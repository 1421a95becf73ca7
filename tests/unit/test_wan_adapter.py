"""The Wan adapter against diffusers itself: feature cache, sharded loading, streaming VAE decode."""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from dualpar.attention.base import AttnCall
from dualpar.attention.dense import DenseAttention
from dualpar.models.loader import build_full_transformer, build_stage, builtin_vae
from dualpar.models.registry import builtin_info, read_model_info
from dualpar.models.wan import PassContext
from dualpar.models.wan_vae import WanVAEStreamDecoder

CPU = torch.device("cpu")


def _ctx(stage, frames, h, w, c, use_cache, capture):
    rope_q = stage.rope_tables(frames, h, w)
    rope_k = stage.rope_tables(frames + c, h, w)
    call = AttnCall(0, 0, 0, 1, ("cond",), (frames, h, w), (frames, h, w), 0)
    return PassContext(rope_q, rope_k, use_cache=use_cache, capture=capture, call=call)


def test_cached_kv_equals_attention_over_concatenated_keys():
    info = builtin_info("tiny", 0)
    stage = build_stage(info, range(0, 1), True, True, torch.float32, CPU)
    stage.install_attention(lambda layer: DenseAttention())
    attn, proc = stage.blocks["0"].attn1, stage.processors[0]
    p, c, h, w = 2, 1, 4, 4
    tpf = (h // 2) * (w // 2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, (p + c) * tpf, 24, generator=gen)  # block k's window
    y = torch.randn(2, (p + c) * tpf, 24, generator=gen)  # block k+1's window (processed just before)
    rows = slice(c * tpf, 2 * c * tpf)  # block k+1's first C own frames
    proc.ctx = _ctx(stage, p + c, h, w, c, use_cache=False, capture=rows)
    attn(y, None, None, None)
    proc.ctx = _ctx(stage, p + c, h, w, c, use_cache=True, capture=None)
    cached = attn(x, None, None, None)
    # oracle: diffusers' own processor over [x | y's C own frames] with RoPE over P+2C frames
    attn.set_processor(WanAttnProcessor())
    joint = torch.cat([x, y[:, rows]], dim=1)
    rope = stage.rope_tables(p + 2 * c, h, w)
    expected = attn(joint, None, None, rope)[:, : x.shape[1]]
    torch.testing.assert_close(cached, expected, atol=1e-6, rtol=1e-5)
    assert cached.shape == x.shape


def test_stage_holds_only_its_layers_and_matches_full_model():
    info = builtin_info("tiny", 0)
    full = build_full_transformer(info)
    stage = build_stage(info, range(1, 3), False, True, torch.float32, CPU)
    names = {n.split(".")[1] for n, _ in stage.named_parameters() if n.startswith("blocks.")}
    assert names == {"1", "2"}
    assert not hasattr(stage, "patch_embedding")
    full_sd = full.state_dict()
    for name, value in stage.state_dict().items():
        assert torch.equal(value, full_sd[name]), name


def test_shard_loading_from_checkpoint_reads_only_owned_tensors(tiny_checkpoint):
    info = read_model_info("tiny", str(tiny_checkpoint))
    mem = build_stage(builtin_info("tiny", 0), range(2, 4), False, True, torch.float32, CPU)
    disk = build_stage(info, range(2, 4), False, True, torch.float32, CPU)
    assert set(disk.state_dict()) == set(mem.state_dict())
    for name, value in disk.state_dict().items():
        assert torch.equal(value, mem.state_dict()[name]), name
    total = sum(p.numel() for p in build_full_transformer(info).parameters())
    assert sum(p.numel() for p in disk.parameters()) < total


def test_stage_split_equals_full_forward():
    info = builtin_info("tiny", 0)
    full = build_full_transformer(info)
    x = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0, 700.0])
    text = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(2))
    expected = full(x, t, text, return_dict=False)[0]
    stages = [build_stage(info, r, r.start == 0, r.stop == 4, torch.float32, CPU) for r in (range(0, 1), range(1, 4))]
    hidden = stages[0].embed(x)
    for st in stages:
        st.install_attention(lambda layer: DenseAttention())
        temb, proj, text_proj = st.conditions(t, text)
        hidden = st.run_layers(hidden, text_proj, proj, _ctx(st, 3, 8, 8, 0, False, None))
    out = stages[-1].head(hidden, temb, (3, 8, 8))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_stream_decode_equals_one_shot_decode():
    vae = builtin_vae(builtin_info("tiny", 0))
    latents = torch.randn(1, 16, 7, 8, 8, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        expected = vae.decode(latents / inv_std + mean, return_dict=False)[0]
    dec = WanVAEStreamDecoder(vae)
    chunks = [dec.decode(latents[:, :, a:b]) for a, b in [(0, 3), (3, 5), (5, 7)]]
    got = torch.cat(chunks, dim=2)
    assert got.shape == expected.shape == (1, 3, 25, 64, 64)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
