"""SkyReels-V2 diffusion forcing: a tiny random-weight SkyReelsV2DiffusionForcingPipeline directory loads shard-only,
one block with C = 0 equals diffusers' SkyReelsV2DiffusionForcingPipeline (synchronous: ar_step 0, one window;
its per-frame UniPC given a copy of the sample, see `_oracle`),
every window frame carries its own block's noise level, and the variants the engine cannot run are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import compose, load_latents, render
from dualpar.testing.tiny_skyreels import build_tiny_skyreels_pipeline, reference_noise, write_tiny_skyreels_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sky_dir(tmp_path_factory):
    return write_tiny_skyreels_checkpoint(tmp_path_factory.mktemp("skyreels") / "ckpt")


def _oracle(pipe, prompt: str, negative: str, seed: int, fps: int, exact_solver: bool = True) -> torch.Tensor:
    """The pipeline's latents. SkyReelsV2DiffusionForcingPipeline steps one UniPC per frame on a view,
    `latents[:, :, idx]`, then overwrites that frame in place; UniPC keeps the view as `last_sample`, so its
    first corrector (step 1) sees the already updated sample instead of the previous one. `exact_solver` hands
    UniPC a copy (what the scheduler expects, and what the engine's per-block solver does); everything else is
    the pipeline's own code."""
    from unittest import mock

    from diffusers import UniPCMultistepScheduler

    step = UniPCMultistepScheduler.step

    def step_on_copy(self, model_output, timestep, sample, *args, **kwargs):
        return step(self, model_output, timestep, sample.clone(), *args, **kwargs)

    patch = mock.patch.object(UniPCMultistepScheduler, "step", step_on_copy) if exact_solver else mock.MagicMock()
    with torch.no_grad(), patch:
        return pipe(
            prompt=prompt,
            negative_prompt=negative,
            height=64,
            width=64,
            num_frames=9,
            num_inference_steps=4,
            guidance_scale=5.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
            max_sequence_length=16,
            base_num_frames=9,
            ar_step=0,
            fps=fps,
        ).frames


def test_single_block_equals_skyreels_df_pipeline(tmp_path, sky_dir, monkeypatch):
    import diffusers.pipelines.skyreels_v2.pipeline_skyreels_v2_diffusion_forcing as df
    from diffusers import SkyReelsV2DiffusionForcingPipeline
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    # SkyReels' prompt_clean calls ftfy unconditionally (not installed here); Wan's, which the engine uses, runs
    # ftfy only when present. For these ASCII prompts ftfy.fix_text is the identity, so the texts are the same.
    monkeypatch.setattr(df, "prompt_clean", prompt_clean)

    prompt, negative, seed = "a red ball bounces", "blurry", 5
    common = [
        f"model.path={sky_dir}",
        f"prompt='{prompt}'",
        f"negative_prompt='{negative}'",
        f"seed={seed}",
        "frames=9",
        "schedule.block_latents=3",
        "schedule.context_latents=0",
        "schedule.steps=4",
        "schedule.guidance=5.0",
        "output.video=false",
        "output.latents=true",
    ]
    report = render(tmp_path / "ours", [*common, "output.fps=24"])
    assert report["blocks"] == 1 and report["latent_frames"] == 3
    ours = load_latents(tmp_path / "ours")
    # the pipeline's generator draws exactly block 0's coordinated noise pool
    assert torch.equal(reference_noise(seed, 3, 8, 8), CoordinatedNoise(seed, 16, 3, 0, 8, 8).next_block())
    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(sky_dir)
    assert pipe.transformer.config.inject_sample_info
    theirs = _oracle(pipe, prompt, negative, seed, fps=24)
    assert ours.shape == theirs.shape == (1, 16, 3, 8, 8)
    assert (ours - theirs).abs().max().item() < 1e-4
    assert not torch.allclose(ours, reference_noise(seed, 3, 8, 8)), "the job actually denoised"
    # the pipeline as shipped differs from exact UniPC only through the aliased first corrector
    assert (_oracle(pipe, prompt, negative, seed, fps=24, exact_solver=False) - theirs).abs().max().item() > 1e-2
    # the fps embedding is really used: 16 fps selects the other sample-info row, in both
    render(tmp_path / "fps16", [*common, "output.fps=16"])
    ours16, theirs16 = load_latents(tmp_path / "fps16"), _oracle(pipe, prompt, negative, seed, fps=16)
    assert (ours16 - theirs16).abs().max().item() < 1e-4
    assert (ours16 - ours).abs().max().item() > 1e-3


def test_same_weights_as_the_pipeline_and_shard_only(sky_dir):
    from dualpar.models.loader import build_stage
    from dualpar.models.registry import read_model_info
    from dualpar.models.skyreels import SkyReelsStage

    info = read_model_info("skyreels-v2-df", str(sky_dir))
    assert info.diffusion_forcing and info.defaults["fps"] == 24
    full = build_tiny_skyreels_pipeline().transformer.state_dict()
    stage = build_stage(info, range(1, 3), False, False, torch.float32, CPU)
    assert isinstance(stage, SkyReelsStage)
    own = dict(stage.named_parameters())
    assert not any(k.startswith(("blocks.0.", "blocks.3.", "patch_embedding", "proj_out")) for k in own)
    assert any(k.startswith("fps_projection.") for k in own), "sample-info conditioning on every stage"
    for key, value in own.items():
        assert torch.equal(value, full[key]), key


def test_window_frames_carry_their_blocks_noise_levels(tmp_path, sky_dir):
    from dualpar.cli import prepare
    from dualpar.job import JobLayout
    from dualpar.models.adapter import FrameLevelStage
    from dualpar.models.loader import build_stage, load_scheduler
    from dualpar.models.registry import read_model_info
    from dualpar.runner import StageRunner

    for mode in ("ahead", "same"):
        raw = compose(
            [
                f"model.path={sky_dir}",
                "frames=33",
                "schedule.block_latents=2",
                "schedule.context_latents=1",
                "schedule.steps=4",
                f"schedule.left_context={mode}",
                "output.video=false",
                "output.latents=true",
                f"output.dir={tmp_path / mode}",
            ]
        )
        cfg, _ = prepare(raw)
        info = read_model_info(cfg.model.name, cfg.model.path)
        job = JobLayout(cfg, info)
        stage = build_stage(info, range(0, 1), True, False, torch.float32, CPU)
        assert isinstance(stage, FrameLevelStage)
        scheduler = load_scheduler(info, None)
        scheduler.set_timesteps(4)
        ts = scheduler.timesteps
        runner = StageRunner(stage, job, torch.zeros(2, 16, 32), ts, torch.float32, CPU)
        assert runner.frame_levels
        for item in job.plan.items:
            levels = runner.window_levels(item)
            assert levels.tolist()[1:] == [int(ts[item.step])] * 2
            if item.block == 0:
                assert int(levels[0]) == int(ts[item.step])
                continue
            updates = item.step + 1 if mode == "ahead" else item.step
            assert int(levels[0]) == (int(ts[updates]) if updates < 4 else 0)
        # the staggered levels reach the conditioning: per-token temb differs between the context and own frames
        item = next(i for i in job.plan.items if i.block == 1 and i.step == 1)
        temb, tproj, _ = runner._conditions(item)
        tpf = job.tokens_per_frame
        dim = info.hidden_dim
        assert temb.shape == (2, 3 * tpf, dim) and tproj.shape == (2, 6, 3 * tpf, dim)
        assert torch.allclose(temb[:, tpf], temb[:, 2 * tpf])
        assert torch.allclose(temb[:, 0], temb[:, tpf]) == (mode == "same"), "ahead: the context is one step cleaner"


def _configs_only(src, dst, edits):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    for rel, entries in edits.items():
        data = json.loads((dst / rel).read_text())
        data.update(entries)
        (dst / rel).write_text(json.dumps(data))
    return dst


REFUSED = {
    "i2v": ({"model_index.json": {"_class_name": "SkyReelsV2DiffusionForcingImageToVideoPipeline"}}, "image-to-video"),
    "v2v": ({"model_index.json": {"_class_name": "SkyReelsV2DiffusionForcingVideoToVideoPipeline"}}, "video-to-video"),
    "plain-t2v": ({"model_index.json": {"_class_name": "SkyReelsV2Pipeline"}}, "without diffusion forcing"),
    "i2v-transformer": ({"transformer/config.json": {"image_dim": 1280}}, "image_dim"),
    "causal-blocks": ({"transformer/config.json": {"num_frame_per_block": 5}}, "num_frame_per_block=5"),
    "wan-transformer": (
        {"transformer/config.json": {"_class_name": "WanTransformer3DModel"}},
        "drives SkyReelsV2Transformer3DModel",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_skyreels_variants_exit_2_before_weights(tmp_path, sky_dir, name, capsys, monkeypatch):
    import dualpar.models.loader as loader
    from dualpar.cli import run

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded for a refused directory")

    monkeypatch.setattr(loader, "read_owned_tensors", no_weights)
    edits, needle = REFUSED[name]
    ckpt = _configs_only(sky_dir, tmp_path / name, edits)
    assert run(compose([f"model.path={ckpt}", f"output.dir={tmp_path / 'out'}"])) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and needle in err, err
    assert not (tmp_path / "out").exists()


def test_av_job_is_refused(tmp_path, sky_dir, capsys):
    from dualpar.cli import run

    assert run(compose([f"model.path={sky_dir}", "job=av", f"output.dir={tmp_path / 'out'}"])) == 2
    assert "SkyReels-V2" in capsys.readouterr().err


def test_planner_counts_sample_info_and_per_token_conditioning(tmp_path, sky_dir):
    from dualpar.api import prepare
    from dualpar.job import JobLayout
    from dualpar.models.registry import read_model_info
    from dualpar.planner import estimate_stages

    cfg, _ = prepare(compose([f"model.path={sky_dir}", f"output.dir={tmp_path}"]))
    sky = JobLayout(cfg, read_model_info(cfg.model.name, cfg.model.path))
    wan = JobLayout(cfg, read_model_info("tiny", None))
    dim = sky.info.hidden_dim
    fps_params = 2 * dim + (dim * dim + dim) + (dim * 6 * dim + 6 * dim)  # embedding, FeedForward(dim, 6 dim)
    rows_tokens = len(sky.branches) * sky.geometry.window_latents * sky.tokens_per_frame
    (a,), (b,) = estimate_stages(sky), estimate_stages(wan)
    assert a.param_bytes - b.param_bytes == 4 * fps_params
    assert a.activation_bytes - b.activation_bytes == rows_tokens * dim * (7 * 4 + 6 * 4)
