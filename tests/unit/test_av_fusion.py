"""Wan block split, zero-initialised fusion and the joint layer runner on tiny random towers (CPU, fp32)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
import torch

from dualpar.av.cache import FeatureCache
from dualpar.av.fusion import AVLayerInputs, AVPassCache, run_av_layers, split_block_forward
from dualpar.av.timegrid import TimeGrid
from dualpar.av.tiny import TINY_WAN, tiny_audio_tower, tiny_wan
from dualpar.av.window import av_window
from dualpar.schedule.blockwise import BlockGeometry

torch.set_num_threads(1)

FRAMES, HW, TPF = 3, 8, 16  # latent frames, latent size, tokens per frame (patch 2x2)
GRID = TimeGrid(Fraction(16), 16000, 500)  # A = 8


def video_inputs(model, seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 4, FRAMES, HW, HW, generator=g)
    t = torch.tensor([500.0, 500.0][:batch])
    text = torch.randn(batch, 7, 32, generator=g)
    return z, t, text


def video_parts(model, z, t, text):
    """WanTransformer3DModel.forward up to the blocks, from public parts (as a video stage runs it)."""
    rope = model.rope(z)
    x = model.patch_embedding(z).flatten(2).transpose(1, 2).contiguous()
    temb, tproj, text_p, _ = model.condition_embedder(t, text, None)
    return x, temb, tproj.unflatten(1, (6, -1)), text_p, rope


def video_head(model, x, temb, z):
    b, _, f, h, w = z.shape
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    x = (model.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
    x = model.proj_out(x).reshape(b, f, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def av_inputs(tower, text, t, tproj_v, text_v, rope_v, strength=None, grid=GRID, block=1):
    geo = BlockGeometry(block_latents=2, context_latents=1, n_blocks=3)
    win = av_window(grid, geo, block)
    g = torch.Generator().manual_seed(5)
    z_a = torch.randn(text.shape[0], 16, win.audio_slots, generator=g)
    emb = tower.embed(z_a, t, text)
    time_v, time_a = win.time_ropes(tower.config.head_dim, TPF)
    inp = AVLayerInputs(text_v=text_v, text_a=emb.text_BTD, tproj_v=tproj_v, tproj_a=emb.tproj_B6D, rope_v=rope_v,
                        time_v=time_v, time_a=time_a, strength_B=strength, audio_valid_S=win.window_audio_valid())
    return emb, inp, win


def test_split_block_equals_forward():
    model = tiny_wan()
    z, t, text = video_inputs(model)
    x, _, tproj, text_p, rope = video_parts(model, z, t, text)
    for block in model.blocks:
        with torch.no_grad():
            ref = block(x, text_p, tproj, rope)
            out = split_block_forward(block, x, text_p, tproj, rope)
        assert torch.equal(out, ref)
        # per-token timesteps (temb [B, S, 6, D], Wan 2.2 TI2V style)
        tok = tproj[:, None].expand(-1, x.shape[1], -1, -1) + 0.01 * torch.randn(2, x.shape[1], 6, 64)
        with torch.no_grad():
            assert torch.equal(split_block_forward(block, x, text_p, tok, rope), block(x, text_p, tok, rope))


@pytest.mark.parametrize("use_cache,ratio,grid", [(False, 1.0, GRID), (True, 1.0, GRID), (True, 0.5, GRID),
                                                   (True, 1.0, TimeGrid(Fraction(16), 44100, 2048))])
def test_zero_init_video_bit_identical(use_cache, ratio, grid):
    wide = {**TINY_WAN, "num_attention_heads": 4}  # video width 128, audio 64 at ratio 0.5
    model = tiny_wan() if ratio == 1.0 else tiny_wan(num_attention_heads=4)
    tower = tiny_audio_tower(width_ratio=ratio, wan_config=None if ratio == 1.0 else wide)
    z, t, text = video_inputs(model)
    with torch.no_grad():
        ref = model(z, t, text).sample
        x, temb, tproj, text_p, rope = video_parts(model, z, t, text)
        ids = list(range(len(model.blocks)))
        audio_blocks, fusions = tower.stage_modules(ids)
        assert all(f is not None for f in fusions)
        cache = FeatureCache()
        for block in [2, 1] if use_cache else [1]:  # tail first: block 1 reads what block 2 stored
            emb, inp, win = av_inputs(tower, text, t, tproj, text_p, rope, grid=grid, block=block)
            assert grid.aligned or inp.audio_valid_S is not None  # padded mode masks the spare slots
            pc = AVPassCache(cache, win.video_store_tokens(TPF), win.audio_store_tokens(), use=block == 1)
            x_v, x_a = run_av_layers(ids, list(model.blocks), audio_blocks, fusions, x, emb.x_BLD, inp,
                                     pc if use_cache else None)
            assert torch.equal(video_head(model, x_v, temb, z), ref)
        vel_a = tower.head(x_a, emb.temb_BD)
    assert vel_a.shape == (2, 16, win.audio_slots) and torch.isfinite(vel_a).all()
    if use_cache:
        kinds = {"audio_self", "a2v", "v2a"}
        assert len(cache) == len(ids) * len(kinds)
        assert cache.get(0, "v2a").k_BSE.shape[1] == TPF * 1
        assert cache.get(0, "a2v").k_BSE.shape[1] == len(win.store_audio)


def test_fusion_trains_and_strength_zero_disables():
    model, tower = tiny_wan(), tiny_audio_tower()
    z, t, text = video_inputs(model)
    x, temb, tproj, text_p, rope = video_parts(model, z, t, text)
    x, temb, tproj, text_p = (a.detach() for a in (x, temb, tproj, text_p))
    emb, inp, _ = av_inputs(tower, text, t, tproj, text_p, rope)
    ids = [0, 1]
    audio_blocks, fusions = tower.stage_modules(ids)
    with torch.no_grad():
        before = run_av_layers(ids, list(model.blocks), audio_blocks, fusions, x, emb.x_BLD.detach(), inp)[0]
    x_v, _ = run_av_layers(ids, list(model.blocks), audio_blocks, fusions, x, emb.x_BLD, inp)
    x_v.square().mean().backward()
    a2v_out = tower.fusion["0"].a2v.out.weight
    assert a2v_out.grad is not None and a2v_out.grad.abs().sum() > 0
    torch.optim.SGD(tower.fusion.parameters(), lr=1.0).step()
    inp0 = dataclasses.replace(inp, strength_B=torch.tensor([1.0, 0.0]))
    with torch.no_grad():
        after = run_av_layers(ids, list(model.blocks), audio_blocks, fusions, x, emb.x_BLD, inp0)[0]
    assert not torch.equal(after[0], before[0])  # fusion now changes the video
    assert torch.equal(after[1], before[1])  # ...except on the strength-0 (sync guidance) row


def test_nonfinite_audio_is_rejected():
    model, tower = tiny_wan(), tiny_audio_tower()
    z, t, text = video_inputs(model)
    x, _, tproj, text_p, rope = video_parts(model, z, t, text)
    emb, inp, _ = av_inputs(tower, text, t, tproj, text_p, rope)
    bad = emb.x_BLD.clone()
    bad[0, 0, 0] = float("nan")
    audio_blocks, fusions = tower.stage_modules([0])
    with pytest.raises(ValueError, match="non-finite"):
        run_av_layers([0], [model.blocks[0]], audio_blocks, fusions, x, bad, inp)
