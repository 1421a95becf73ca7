"""Audio tower shapes and init, audio noise, guidance and the typed options."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from dualpar.av.branch import AudioBranchConfig, AudioTower, build_audio_tower
from dualpar.av.codec import TinyAudioCodec, load_codec
from dualpar.av.config import AudioConfig
from dualpar.av.guidance import fusion_strength, guided
from dualpar.av.noise import audio_block_noise, mix_seed
from dualpar.av.rope import TimeRope
from dualpar.av.timegrid import TimeGrid
from dualpar.av.tiny import TINY_WAN, tiny_audio_tower, tiny_wan
from dualpar.schedule.noise import CoordinatedNoise

torch.set_num_threads(1)

WAN_1_3B = {"num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960, "num_layers": 30,
            "text_dim": 4096, "freq_dim": 256}


def test_config_from_wan():
    full = AudioBranchConfig.from_wan(WAN_1_3B, latent_channels=16)
    half = AudioBranchConfig.from_wan(WAN_1_3B, latent_channels=16, width_ratio=0.5, fusion_every=3)
    assert (full.dim, full.num_layers, full.head_dim, full.ffn_dim) == (1536, 30, 128, 8960)
    assert (half.dim, half.num_heads, half.ffn_dim, half.video_dim) == (768, 6, 4480, 1536)
    assert half.fused_layers == tuple(range(0, 30, 3))
    with pytest.raises(ValueError, match="width_ratio"):
        AudioBranchConfig.from_wan({**WAN_1_3B, "num_attention_heads": 5}, 16, 0.5)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_tower_pieces_and_audio_only_forward(ratio, tmp_path):
    wan = {**TINY_WAN, "num_attention_heads": 2} if ratio == 1.0 else {**TINY_WAN, "num_attention_heads": 4}
    tower = tiny_audio_tower(width_ratio=ratio, wan_config=wan)
    assert tower.config.dim == 64 and len(tower.blocks) == 2 and set(tower.fusion) == {"0", "1"}
    z = torch.randn(2, 16, 24)
    t = torch.tensor([900.0, 900.0])
    text = torch.randn(2, 5, 32)
    rope = TimeRope.from_positions(torch.arange(24, dtype=torch.float64) / 8, tower.config.head_dim)
    with torch.no_grad():
        emb = tower.embed(z, t, text)
        assert emb.x_BLD.shape == (2, 24, 64) and emb.tproj_B6D.shape == (2, 6, 64)
        out = tower(z, t, text, rope)
    assert out.shape == z.shape and torch.isfinite(out).all()
    blocks, fusions = tower.stage_modules([1])
    assert blocks[0] is tower.blocks[1] and fusions[0] is tower.fusion["1"]
    tower.save_pretrained(tmp_path / "tower")
    again = AudioTower.from_pretrained(tmp_path / "tower")
    if ratio == 1.0:
        loaded = build_audio_tower(wan, 16, AudioConfig(init="checkpoint", checkpoint=str(tmp_path / "tower")))
        assert loaded.config == tower.config
    with torch.no_grad():
        assert torch.equal(again(z, t, text, rope), out)


def test_init_from_video_copies_blocks():
    video = tiny_wan()
    tower = build_audio_tower(TINY_WAN, 16, AudioConfig(init="from_video"), video.blocks, video.condition_embedder)
    for mine, theirs in zip(tower.blocks, video.blocks):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
    assert torch.equal(tower.condition_embedder.time_proj.weight, video.condition_embedder.time_proj.weight)
    stage = tiny_audio_tower()
    stage.init_from_video({1: video.blocks[1]})  # a stage copies only its own layers
    assert torch.equal(stage.blocks[1].ffn.net[2].weight, video.blocks[1].ffn.net[2].weight)
    assert stage.owned_prefixes([1], first=False, last=True) == (
        "condition_embedder.", "blocks.1.", "fusion.1.", "norm_out.", "proj_out.", "scale_shift_table")
    half = tiny_audio_tower(width_ratio=0.5, wan_config={**TINY_WAN, "num_attention_heads": 4})
    with pytest.raises(ValueError, match="width_ratio"):
        half.init_from_video(video.blocks)


def test_audio_noise_is_per_block_and_leaves_video_noise_alone():
    a = audio_block_noise(seed=7, block=3, channels=16, latents=80)
    assert torch.equal(a, audio_block_noise(7, 3, 16, 80))  # any N, any launcher: a function of (seed, k)
    assert not torch.equal(a, audio_block_noise(7, 4, 16, 80))
    assert len({mix_seed(s, k) for s in range(4) for k in range(1000)}) == 4000
    ref, mixed = CoordinatedNoise(0, 4, 3, 1, 2, 2), CoordinatedNoise(0, 4, 3, 1, 2, 2)
    for k in range(4):
        expected = ref.next_block()
        audio_block_noise(0, k, 16, 24)
        assert torch.equal(mixed.next_block(), expected)


def test_guidance_and_strength():
    c, u, nf = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([2.0])
    assert guided(c, u, 3.0).item() == 4.0
    assert guided(c, u, 3.0, nf, sync_scale=3.0).item() == 4.0  # zero-init fusion: no-fusion row == cond
    assert guided(c, u, 3.0, torch.tensor([1.5]), sync_scale=3.0).item() == 5.0
    assert fusion_strength(3).tolist() == [1.0, 1.0, 0.0]


def test_audio_config_validation():
    assert AudioConfig.from_mapping(None) == AudioConfig()
    assert AudioConfig.from_mapping({"sync_guidance": 3.0}).guidance_rows == 3
    for bad in ({"width_ratio": 0.7}, {"codec": "mp3"}, {"init": "checkpoint"}, {"codec": "oobleck"},
                {"init": "from_video", "width_ratio": 0.5}, {"fusion_every": 0, "sync_guidance": 3.0}):
        with pytest.raises(ValueError):
            AudioConfig.from_mapping(bad)
    with pytest.raises(ValueError, match="known"):
        AudioConfig.from_mapping({"widht_ratio": 1.0})
    with pytest.raises(ValueError, match="integer A"):
        AudioConfig(mode="aligned").check_grid(TimeGrid(Fraction(16), 44100, 2048))
    AudioConfig(mode="aligned").check_grid(TimeGrid(Fraction(16), 16000, 500))
    assert isinstance(load_codec("tiny"), TinyAudioCodec)


def test_cast_keeps_wan_fp32_modules():
    tower = tiny_audio_tower().cast(torch.bfloat16)
    assert tower.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert tower.scale_shift_table.dtype == tower.blocks[0].scale_shift_table.dtype == torch.float32
    assert tower.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    rope = TimeRope.from_positions(torch.arange(8, dtype=torch.float64) / 8, 32)
    with torch.no_grad():
        out = tower(torch.randn(1, 16, 8).bfloat16(), torch.tensor([10.0]), torch.randn(1, 3, 32).bfloat16(), rope)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_job_yaml_matches_audio_config():
    from pathlib import Path

    from omegaconf import OmegaConf

    import dualpar

    raw = OmegaConf.to_container(OmegaConf.load(Path(dualpar.__file__).parent / "conf" / "job" / "av.yaml"))
    assert raw["job"] == "av"
    assert AudioConfig.from_mapping(raw["audio"]) == AudioConfig()  # every key known, defaults agree
