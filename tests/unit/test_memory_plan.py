"""The planner's per-stage memory counts stage 0's VAE and decoder cache, the text encoder while it runs (or
not, with model.text_encoder_device=cpu) and the pre-posted receive buffers, with dualpar.sim.memory's terms."""

from __future__ import annotations

from dualpar.cli import prepare
from dualpar.job import JobLayout
from dualpar.models.registry import read_model_info
from dualpar.planner import estimate_stages
from dualpar.sim.memory import receive_buffer_bytes, streaming_decoder_bytes
from dualpar.sim.model import from_model_info
from dualpar.testing.jobs import compose


def test_receive_buffers_follow_the_transport_posting_depth() -> None:
    assert receive_buffer_bytes(0, 1, 100.0, 10.0, 4) == 0.0  # one stage: no messages
    assert receive_buffer_bytes(0, 3, 100.0, 10.0, 4) == (2 * 4 + 2) * 10.0  # returned outputs
    assert receive_buffer_bytes(2, 3, 100.0, 10.0, 4) == 2 * 100.0  # hidden states, two posted


def _job(*overrides: str) -> JobLayout:
    cfg, _ = prepare(
        compose(["model=tiny", "parallel.stages=2", "launcher=spawn", "height=64", "width=64", *overrides])
    )
    return JobLayout(cfg, read_model_info("tiny", None, 0))


def test_stage0_counts_decoder_text_encoder_and_receives() -> None:
    job = _job()
    first, second = estimate_stages(job)
    spec = from_model_info(job.info)
    assert first.decoder_bytes == int(streaming_decoder_bytes(64, 64, spec.vae_params, 4)) > 0
    assert first.text_encoder_bytes == int(spec.text_encoder_params * 4) > 0
    h, w = job.latent_hw
    velocity = int(job.info.transformer["out_channels"]) * job.geometry.window_latents * h * w * 4
    assert first.receive_bytes == (2 * job.plan.max_in_flight + 2) * velocity
    hidden = len(job.branches) * job.geometry.window_latents * job.tokens_per_frame * job.info.hidden_dim * 4
    assert second.receive_bytes == 2 * hidden
    assert second.decoder_bytes == second.text_encoder_bytes == 0
    for est in (first, second):  # the text encoder is freed before denoising: the larger phase counts
        # the encoder runs and is freed before the layers load (dualpar.launch.worker._encode_prompts)
        assert est.total_bytes == max(est.text_encoder_bytes, est.param_bytes + est.denoise_bytes)


def test_host_text_encoder_and_no_video_free_stage0() -> None:
    default = estimate_stages(_job())[0]
    lean = estimate_stages(_job("model.text_encoder_device=cpu", "output.video=false", "output.latents=true"))[0]
    assert lean.text_encoder_bytes == 0 and lean.decoder_bytes == 0
    assert lean.total_bytes < default.total_bytes
