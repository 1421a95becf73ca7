"""The `av` job through the real pipeline: zero-init identity with the `video` job, N stages bit-identical to
one (with live, non-zero fusion, so the cross-modal caches matter), and the muxed mp4's audio track."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualpar.av.branch import AudioBranchConfig, AudioTower
from dualpar.cli import prepare
from dualpar.models.registry import read_model_info
from dualpar.sinks.probe import probe_video, read_frames
from dualpar.sinks.wav import iter_wav, read_wav_info
from dualpar.testing.crash import crash_in_process
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.multi import spawn_jobs

BASE = ["frames=45", "height=32", "width=32", "schedule.steps=3", "output.latents=true", "parallel.threads=1",
        "parallel.timeout_s=120"]
AV = ["job=av", "audio.wav=true"]


@pytest.fixture(scope="module")
def live_tower(tmp_path_factory):
    """An audio tower checkpoint whose fusion projections are NOT zero: audio and video influence each other."""
    wan = read_model_info("tiny", None, 0).transformer
    torch.manual_seed(7)
    tower = AudioTower(AudioBranchConfig.from_wan(wan, 16, 1.0, 1))
    with torch.no_grad():
        for fusion in tower.fusion.values():
            for attn in (fusion.a2v, fusion.v2a):
                attn.out.weight.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("tower")
    tower.save_pretrained(path)
    return path


def _wav(path) -> bytes:
    assert read_wav_info(path).sample_rate == 16000
    return path.read_bytes()


def _audio_samples(path) -> np.ndarray:
    return np.concatenate(list(iter_wav(path)), axis=1)


def _spawn(tmp_path, stages: int, variants: dict[str, list[str]]) -> dict[str, dict]:
    cfgs = [prepare(compose([*BASE, *extra, f"parallel.stages={stages}", "launcher=spawn", "output.progress=false",
                             f"output.dir={tmp_path / f'{stages}-{name}'}"]))[0] for name, extra in variants.items()]
    return dict(zip(variants, spawn_jobs(cfgs)))


@pytest.mark.timeout(600)
def test_zero_init_fusion_leaves_the_video_bit_identical(tmp_path):
    video = tmp_path / "video"
    render(video, [*BASE])
    ref = load_latents(video)
    render(tmp_path / "1-av", [*BASE, *AV])
    reports = _spawn(tmp_path, 2, {"av": AV})
    for name in ("1-av", "2-av"):
        got = load_latents(tmp_path / name)
        assert torch.equal(got, ref), f"{name}: max diff {(got - ref).abs().max()}"
        pcm = _audio_samples(tmp_path / name / "audio.wav")
        assert pcm.shape == (1, 45_000)  # ceil(45 frames * 16000 / 16)
        assert np.isfinite(pcm).all() and np.abs(pcm).max() > 1e-3
    assert reports["av"]["audio"]["samples_written"] == 45_000
    assert (read_frames(tmp_path / "2-av" / "video.mp4") == read_frames(video / "video.mp4")).all()


@pytest.mark.timeout(600)
def test_live_fusion_changes_the_video(tmp_path, live_tower):
    render(tmp_path / "video", BASE)
    render(tmp_path / "av", [*BASE, *AV, "audio.init=checkpoint", f"audio.checkpoint={live_tower}"])
    ref, got = load_latents(tmp_path / "video"), load_latents(tmp_path / "av")
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() > 1e-4  # fusion is wired in: the audio reaches the video


VARIANTS = {
    "ahead": [],
    "same": ["schedule.left_context=same"],
    "padded": ["output.fps=24"],  # A = 16/3: padded windows with masked audio slots
    "sync": ["audio.sync_guidance=3.0"],  # a third, no-fusion batch row
    "split": ["audio.sync_guidance=3.0", "parallel.cfg_split=true"],  # three one-row micro-batches per pass
    "sparse": ["attention=clustered", "attention.num_q_clusters=4", "attention.num_k_clusters=8"],  # video only
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("stages", [2, 3])
def test_av_stages_bit_identical_to_one_stage(tmp_path, live_tower, stages):
    tower = [*AV, "audio.init=checkpoint", f"audio.checkpoint={live_tower}", "output.video=true"]
    variants = {name: [*tower, *extra] for name, extra in VARIANTS.items()}
    if stages == 3:
        variants = {k: v for k, v in variants.items() if k in ("ahead", "padded")}
    reports = _spawn(tmp_path, stages, variants)
    for name, extra in variants.items():
        ref_dir = tmp_path / f"ref-{name}"
        render(ref_dir, [*BASE, *extra])
        got, ref = load_latents(tmp_path / f"{stages}-{name}"), load_latents(ref_dir)
        assert reports[name]["plan"]["stages"] == stages
        assert torch.equal(got, ref), f"{stages} stages, {name}: video max diff {(got - ref).abs().max()}"
        wav_got, wav_ref = _wav(tmp_path / f"{stages}-{name}" / "audio.wav"), _wav(ref_dir / "audio.wav")
        assert wav_got == wav_ref, f"{stages} stages, {name}: audio differs"


@pytest.mark.timeout(300)
def test_av_mp4_round_trip(tmp_path):
    report = render(tmp_path, [*BASE, *AV, "frames=37", "output.fps=24"])
    info = probe_video(tmp_path / "video.mp4")
    written = report["audio"]["samples_written"]
    assert written == report["audio"]["total_samples"] == -(-37 * 16000 // 24)
    assert info.frames == 37
    import av

    with av.open(str(tmp_path / "video.mp4")) as box:
        stream = box.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.rate == 16000
        decoded = sum(frame.samples for frame in box.decode(audio=0))
    assert written <= decoded < written + 1024  # AAC pads the last frame, never drops samples
    assert abs(decoded / 16000 - 37 / 24) < 1024 / 16000 + 1 / 24
    assert abs(written / 16000 - 37 / 24) <= 1 / 24


@pytest.mark.timeout(600)
def test_av_resume_equals_uninterrupted(tmp_path, monkeypatch, live_tower):
    """A crash in the steady state and a resume give the same video, audio track and latents (audio solver
    states, stream decoder and samples written are in the checkpoint)."""
    job = [*BASE, *AV, "audio.init=checkpoint", f"audio.checkpoint={live_tower}"]
    ref = tmp_path / "ref"
    render(ref, job)
    out = tmp_path / "crashed"
    kill = ["checkpoint.every=2", "debug.kill_rank=0", "debug.kill_at_iteration=5"]
    crash_in_process(monkeypatch, out, [*job, *kill])
    report = render(out, [*job, *kill, "resume=true"])
    assert report["restart"]["resumed_from_iteration"] == 4
    assert torch.equal(load_latents(out), load_latents(ref))
    assert _wav(out / "audio.wav") == _wav(ref / "audio.wav")
    assert report["audio"]["samples_written"] == 45_000
    assert (read_frames(out / "video.mp4") == read_frames(ref / "video.mp4")).all()


TINY_OOBLECK = {"encoder_hidden_size": 4, "downsampling_ratios": [2, 4, 4, 4, 4], "channel_multiples": [1, 1, 1, 1, 1],
                "decoder_channels": 4, "decoder_input_channels": 8, "audio_channels": 1, "sampling_rate": 16000}


@pytest.mark.timeout(600)
def test_av_with_a_diffusers_oobleck_codec(tmp_path):
    """A real diffusers codec class from a local directory: non-causal (its audio leaves one block late and
    the rest at the end), hop 512 at 16 fps gives A = 125/16 (padded windows); N stages equal one."""
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    AutoencoderOobleck(**TINY_OOBLECK).save_pretrained(tmp_path / "stable-audio" / "vae")
    job = [*BASE, *AV, "audio.codec=oobleck", f"audio.codec_path={tmp_path / 'stable-audio'}",
           "audio.codec_subfolder=vae"]
    one = render(tmp_path / "one", job)
    two = _spawn(tmp_path, 2, {"oobleck": job})["oobleck"]
    for report in (one, two):
        assert report["audio"]["aligned"] is False and report["audio"]["hop"] == 512
        assert report["audio"]["samples_written"] == 45_000
    assert _wav(tmp_path / "one" / "audio.wav") == _wav(tmp_path / "2-oobleck" / "audio.wav")
    pcm = _audio_samples(tmp_path / "one" / "audio.wav")
    assert pcm.shape == (1, 45_000) and np.isfinite(pcm).all()
