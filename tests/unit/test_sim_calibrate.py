"""Calibration from a report.json: a synthetic report reproduces its own run and predicts other N."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dualpar.sim.calibrate import calibrate, predict_breakdown, predict_from_report
from dualpar.sim.cluster import load_cluster
from dualpar.sim.job import Job
from dualpar.sim.model import from_diffusers_config
from dualpar.sim.simulate import simulate
from dualpar.sim.trace import chrome_trace, report_from_sim

TINY = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 4,
    "ffn_dim": 64,
    "text_dim": 32,
    "freq_dim": 16,
    "in_channels": 4,
    "out_channels": 4,
    "patch_size": [1, 2, 2],
}


def _synthetic(stages: int = 1):
    model = from_diffusers_config(TINY, text_tokens=16, text_encoder_params=1e5, vae_params=1e4)
    cluster = load_cluster("cpu2")
    job = Job(height=64, width=64, frames=81, steps=6, block_latents=2, context_latents=1, stages=stages)
    result = simulate(job, model, cluster, record=True)
    return model, cluster, job, result, json.loads(json.dumps(report_from_sim(result, load_s=1.25)))


def test_calibration_recovers_the_costs_and_the_wall_time() -> None:
    _, _, _, result, report = _synthetic()
    t = calibrate(report)
    c = result.costs
    assert t.layer_s == pytest.approx(c.layer_s)
    assert t.layer_right_s == pytest.approx(c.layer_right_s)
    assert t.embed_s == pytest.approx(c.embed_s)
    assert t.head_s == pytest.approx(c.head_s + c.guidance_s)
    assert t.scheduler_s == pytest.approx(c.scheduler_s)
    assert t.decode_s_per_latent == pytest.approx(c.decode_s_per_latent)
    b = predict_breakdown(report, stages=1)
    assert b["replayed_own_s"] == pytest.approx(result.pipeline.makespan_s, rel=1e-9)
    assert predict_from_report(report, stages=1) == pytest.approx(report["wall_s"], rel=1e-9)


def test_one_stage_report_predicts_a_two_stage_run() -> None:
    model, cluster, job, _, report = _synthetic()
    two = simulate(dataclasses.replace(job, stages=2), model, cluster)
    assert predict_from_report(report, stages=2, cluster=cluster) == pytest.approx(
        1.25 + two.latency_s, rel=1e-6
    )


def test_a_report_without_compute_spans_is_rejected() -> None:
    _, _, _, _, report = _synthetic()
    for st in report["timeline"]["stages"]:
        st["spans"] = [s for s in st["spans"] if s["kind"] != "compute"]
    with pytest.raises(ValueError, match="compute"):
        calibrate(report)


def test_chrome_trace_has_a_lane_per_stage() -> None:
    _, _, _, result, _ = _synthetic(stages=2)
    events = chrome_trace(result)["traceEvents"]
    assert {e["pid"] for e in events} == {0, 1}
    assert any(e.get("cat") == "send" for e in events)


def test_nested_embed_and_head_spans_are_taken_out_of_compute() -> None:
    _, _, _, result, report = _synthetic()
    for st in report["timeline"]["stages"]:  # the engine style: one compute span around embed/layers/head
        merged, by_item = [], {}
        for sp in st["spans"]:
            if sp["kind"] in ("embed", "compute", "head"):
                lo, hi = by_item.get(sp["item"], (sp["t0"], sp["t1"]))
                by_item[sp["item"]] = (min(lo, sp["t0"]), max(hi, sp["t1"]))
        merged = [{"kind": "compute", "item": i, "t0": a, "t1": b} for i, (a, b) in by_item.items()]
        nested = [sp for sp in st["spans"] if sp["kind"] in ("embed", "head")]
        st["spans"] = (
            merged + nested + [sp for sp in st["spans"] if sp["kind"] not in ("embed", "compute", "head")]
        )
    t = calibrate(report)
    assert t.layer_s == pytest.approx(result.costs.layer_s)
    assert t.embed_s == pytest.approx(result.costs.embed_s)
