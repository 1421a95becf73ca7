"""Physical-time RoPE and the audio feature cache (CPU, fp32, tiny sizes)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor, WanRotaryPosEmbed

from dualpar.av.cache import CacheContext, CachedSelfAttnProcessor, FeatureCache
from dualpar.av.fusion import TimeCrossAttention
from dualpar.av.rope import TimeRope, temporal_dims, time_rope_tables
from dualpar.av.timegrid import TimeGrid
from dualpar.av.window import av_window
from dualpar.models.rope import apply_rope
from dualpar.schedule.blockwise import BlockGeometry

torch.set_num_threads(1)
HEAD_DIM = 32
GRIDS = [TimeGrid(Fraction(16), 16000, 500), TimeGrid(Fraction(16), 16000, 640),
         TimeGrid(Fraction(30000, 1001), 44100, 2048)]


def test_integer_positions_match_wan_table():
    wan = WanRotaryPosEmbed(HEAD_DIM, (1, 2, 2), max_seq_len=64)
    t_dim = temporal_dims(HEAD_DIM)
    cos, sin = time_rope_tables(torch.arange(20, dtype=torch.float64), HEAD_DIM)
    assert torch.equal(cos[:, :t_dim], wan.freqs_cos[:20, :t_dim])
    assert torch.equal(sin[:, :t_dim], wan.freqs_sin[:20, :t_dim])
    assert torch.equal(cos[:, t_dim:], torch.ones(20, HEAD_DIM - t_dim))
    assert torch.equal(sin[:, t_dim:], torch.zeros(20, HEAD_DIM - t_dim))


def similarity(u_q: torch.Tensor, u_k: torch.Tensor) -> torch.Tensor:
    """Logits of a constant q = k rotated by the time RoPE: [Lq, Lk]."""
    x = torch.ones(1, 1, 1, HEAD_DIM, dtype=torch.float64)
    cq, sq = time_rope_tables(u_q, HEAD_DIM)
    ck, sk = time_rope_tables(u_k, HEAD_DIM)
    q = apply_rope(x.expand(1, len(u_q), 1, HEAD_DIM).clone(), cq.double(), sq.double())[0, :, 0]
    k = apply_rope(x.expand(1, len(u_k), 1, HEAD_DIM).clone(), ck.double(), sk.double())[0, :, 0]
    return q @ k.T


@pytest.mark.parametrize("grid", GRIDS)
def test_audio_tokens_prefer_the_video_latent_that_covers_them(grid):
    geo = BlockGeometry(5, 3, 4)
    for block in range(geo.n_blocks):
        win = av_window(grid, geo, block)
        u_v, u_a = win.video_positions(), win.audio_positions()
        real = torch.cat([torch.arange(len(win.audio)),
                          win.audio_slots + torch.arange(len(win.cached_audio))])
        frames = list(win.video) + list(win.cached_video)
        owners = [next(i for i in frames if j in grid.audio_of_latents(i, i + 1))
                  for j in list(win.audio) + list(win.cached_audio)]
        best = similarity(u_a[real], u_v).argmax(dim=1)
        dist = (u_a[real][:, None] - u_v[None, :]).abs()
        nearest = dist.min(dim=1).values
        for row, (b, owner) in enumerate(zip(best.tolist(), owners)):
            assert dist[row, b] == nearest[row]  # the best frame is the nearest in time...
            assert dist[row, frames.index(owner)] == nearest[row]  # ...and so is the covering one
            if (dist[row] == nearest[row]).sum() == 1:  # a centre on a latent boundary ties two frames
                assert frames[b] == owner
        # and each video latent's best audio key is (one of) the nearest in time
        logits = similarity(u_v, u_a[real])
        dist = (u_v[:, None] - u_a[real][None, :]).abs()
        picked = dist.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
        assert torch.allclose(picked, dist.min(dim=1).values)


def test_shift_invariance():
    win = av_window(GRIDS[2], BlockGeometry(5, 3, 4), 2)
    u_v, u_a = win.video_positions(), win.audio_positions()
    ref = similarity(u_v, u_a)
    for shift in (1.0, -7.25, 3.0 / 11.0):
        torch.testing.assert_close(similarity(u_v + shift, u_a + shift), ref, atol=2e-6, rtol=0)  # float32 tables


def make_attn(seed: int = 0) -> WanAttention:
    torch.manual_seed(seed)
    return WanAttention(dim=64, heads=2, dim_head=HEAD_DIM, eps=1e-6, processor=WanAttnProcessor())


def wan_tables(u: torch.Tensor):
    return TimeRope.from_positions(u, HEAD_DIM).wan_tables()


def test_processor_without_cache_equals_wan():
    attn = make_attn()
    x = torch.randn(2, 24, 64)
    tables = wan_tables(torch.arange(24, dtype=torch.float64) / 8 - 0.4)
    with torch.no_grad():
        ref = attn(x, None, None, tables)
        attn.set_processor(CachedSelfAttnProcessor())
        assert torch.equal(attn(x, None, None, tables), ref)


def test_cached_kv_equals_attention_over_concatenated_keys():
    attn, proc = make_attn(), CachedSelfAttnProcessor()
    g = torch.Generator().manual_seed(3)
    n, c = 24, 8  # window tokens, cached tokens
    right = torch.randn(2, n, 64, generator=g)  # block k+1's window; tokens [8, 16) are its first C own
    window = torch.randn(2, n, 64, generator=g)
    u = torch.arange(n + c, dtype=torch.float64) / 8 - 7 / 16
    tables = wan_tables(u)
    cache = FeatureCache()
    with torch.no_grad():
        attn.set_processor(proc)
        proc.context = CacheContext(cache, layer=0, kind="audio_self", store=slice(8, 16))
        attn(right, None, None, tables)  # fills the cache (nothing to read yet)
        out = attn(window, None, None, tables)  # reads block k+1's entry, stores its own
        proc.context = None
        attn.set_processor(WanAttnProcessor())
        ref = attn(torch.cat([window, right[:, 8:16]], dim=1), None, None, tables)[:, :n]
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    assert torch.equal(cache.get(0, "audio_self").k_BSE, attn.to_k(window[:, 8:16]).detach())


def test_masked_padding_keys_are_ignored():
    attn, proc = make_attn(1), CachedSelfAttnProcessor()
    x = torch.randn(1, 12, 64)
    valid = torch.tensor([True] * 9 + [False] * 3)
    u = torch.arange(12, dtype=torch.float64) / 6.25
    with torch.no_grad():
        attn.set_processor(proc)
        proc.context = CacheContext(FeatureCache(), 0, "audio_self", valid_S=valid)
        out = attn(x, None, None, wan_tables(u))[:, :9]
        proc.context = None
        ref = attn(x[:, :9], None, None, wan_tables(u[:9]))
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)


def test_fusion_attention_cache_equals_concatenation():
    torch.manual_seed(4)
    xattn = TimeCrossAttention(q_dim=64, kv_dim=48, heads=2, head_dim=HEAD_DIM)
    tpf, frames = 4, 6
    video = torch.randn(2, frames * tpf, 64)
    audio_next, audio = torch.randn(2, 48, 48), torch.randn(2, 48, 48)
    rope_v = TimeRope.from_positions(torch.arange(frames, dtype=torch.float64), HEAD_DIM, repeat=tpf)
    rope_a = TimeRope.from_positions(torch.arange(64, dtype=torch.float64) / 8 - 7 / 16, HEAD_DIM)
    cache = FeatureCache()
    with torch.no_grad():
        xattn(video, audio_next, rope_v, rope_a, CacheContext(cache, 0, "a2v", store=slice(16, 32)))
        out = xattn(video, audio, rope_v, rope_a, CacheContext(cache, 0, "a2v", store=slice(16, 32)))
        ref = xattn(video, torch.cat([audio, audio_next[:, 16:32]], dim=1), rope_v, rope_a)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)


def test_cache_not_read_without_right_neighbour():
    attn, proc = make_attn(2), CachedSelfAttnProcessor()
    x, y = torch.randn(1, 16, 64), torch.randn(1, 16, 64)
    tables = wan_tables(torch.arange(24, dtype=torch.float64))
    cache = FeatureCache()
    with torch.no_grad():
        attn.set_processor(proc)
        proc.context = CacheContext(cache, 0, "audio_self", store=slice(0, 8))
        attn(y, None, None, tables)
        proc.context = CacheContext(cache, 0, "audio_self", store=slice(0, 8), use=False)  # tail block
        out = attn(x, None, None, tables)
        proc.context = None
        assert torch.equal(out, attn(x, None, None, tables))
    assert torch.equal(cache.get(0, "audio_self").v_BSE, attn.to_v(x[:, :8]).detach())
