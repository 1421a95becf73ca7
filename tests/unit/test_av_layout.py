"""The av job's layout before any weights load: per-block audio ranges, window assembly on stage 0, codec facts
read from config files, and the planner's per-stage estimate including the audio tower."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch

from dualpar.av.config import AudioConfig
from dualpar.av.layout import AVLayout, codec_facts
from dualpar.av.queue import AVBlockQueue
from dualpar.cli import prepare
from dualpar.job import JobLayout
from dualpar.models.registry import read_model_info
from dualpar.planner import estimate_stages
from dualpar.schedule.blockwise import BlockGeometry, WorkItem
from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import compose


@pytest.mark.parametrize("fps", [16, 24, Fraction(30000, 1001)])
def test_blocks_own_disjoint_audio_and_windows_fit_their_slots(fps):
    geo = BlockGeometry(3, 2, 40)
    layout = AVLayout.build(AudioConfig(), geo, frames=400, fps=fps, temporal_stride=4, causal_first_frame=True)
    owned = [layout.own_audio(k) for k in range(geo.n_blocks)]
    assert owned[0].start == 0
    assert all(a.stop == b.start for a, b in zip(owned, owned[1:])), "blocks tile the audio latents"
    for k in range(geo.n_blocks):
        win = layout.window(k)
        assert layout.left_audio(k) + len(owned[k]) == len(win.audio) <= layout.slots
        assert win.audio.stop == owned[k].stop
    if fps == 16:  # aligned: A = 8 exactly, no padding
        assert layout.grid.aligned and layout.slots == 8 * geo.window_latents
        assert all(len(r) == 8 * 3 for r in owned[1:])


def test_stage0_window_is_left_audio_then_own_then_padding():
    geo = BlockGeometry(2, 1, 3)
    layout = AVLayout.build(AudioConfig(), geo, frames=20, fps=24, temporal_stride=4, causal_first_frame=True)
    sched = _Stepper()
    noise = CoordinatedNoise(0, 4, 2, 1, 2, 2)
    queue = AVBlockQueue(geo, noise, sched, [1.0, 0.5], [1.0, 0.5], "ahead", layout=layout, seed=3)
    queue.join(0)
    queue.join(1)
    queue.apply(WorkItem(0, 0, 0, 0, True), (torch.zeros(1, 4, 3, 2, 2), torch.ones(1, 16, len(layout.own_audio(0)))))
    video, audio = queue.window(WorkItem(1, 1, 1, 0, False))
    n_left, own = layout.left_audio(1), queue.audio[1].latents
    assert audio.shape == (1, 16, layout.slots)
    assert torch.equal(audio[:, :, :n_left], queue.audio[0].latents[:, :, -n_left:])  # "ahead": block 0 after 1 step
    assert torch.equal(audio[:, :, n_left:n_left + own.shape[2]], own)
    assert (audio[:, :, n_left + own.shape[2]:] == 0).all()
    assert video.shape[2] == geo.window_latents


class _Stepper:
    """A stand-in solver: x <- x - velocity (enough to see which version a window reads)."""

    def step(self, v, t, x, return_dict=False):
        return (x - v,)


def test_codec_facts_come_from_config_files(tmp_path):
    assert codec_facts(AudioConfig()).sample_rate == 16000
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"sampling_rate": 44100, "downsampling_ratios": [2, 4, 4, 8, 8],
                                                 "audio_channels": 2, "decoder_input_channels": 64}))
    facts = codec_facts(AudioConfig(codec="oobleck", codec_path=str(tmp_path), codec_subfolder="vae"))
    assert (facts.sample_rate, facts.hop, facts.channels, facts.latent_channels) == (44100, 2048, 2, 64)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_planner_weights_per_stage_equal_what_the_stages_load(ratio):
    from dualpar.av_runner import build_audio_stage
    from dualpar.models.loader import build_stage

    cfg, _ = prepare(compose(["model=tiny", "parallel.stages=2", "launcher=spawn", "job=av",
                              f"audio.width_ratio={ratio}"]))
    job = JobLayout(cfg, read_model_info("tiny", None, 0))
    for est, layers in zip(estimate_stages(job), job.stage_layers):
        first, last = layers.start == 0, layers.stop == job.info.num_layers
        stage = build_stage(job.info, layers, first, last, torch.float32, torch.device("cpu"))
        tower = build_audio_stage(job, stage, torch.float32, torch.device("cpu"))
        loaded = [p for p in [*stage.parameters(), *tower.parameters()] if not p.is_meta]
        assert est.param_bytes == sum(p.numel() * p.element_size() for p in loaded)


def test_from_video_init_copies_each_stages_own_video_blocks():
    from dualpar.av_runner import build_audio_stage
    from dualpar.models.loader import build_stage

    cfg, _ = prepare(compose(["model=tiny", "parallel.stages=2", "launcher=spawn", "job=av", "audio.init=from_video"]))
    job = JobLayout(cfg, read_model_info("tiny", None, 0))
    for layers in job.stage_layers:
        first, last = layers.start == 0, layers.stop == job.info.num_layers
        stage = build_stage(job.info, layers, first, last, torch.float32, torch.device("cpu"))
        tower = build_audio_stage(job, stage, torch.float32, torch.device("cpu"))
        for i in layers:
            video, audio = stage.blocks[str(i)].state_dict(), tower.blocks[i].state_dict()
            assert video.keys() == audio.keys() and all(torch.equal(video[k], audio[k]) for k in video)
        assert torch.equal(tower.condition_embedder.time_proj.weight, stage.condition_embedder.time_proj.weight)
        assert all(not p.is_meta for p in tower.fusion[str(layers.start)].parameters())
