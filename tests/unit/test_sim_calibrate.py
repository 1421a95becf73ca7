"""Calibration from a report.json: a synthetic report reproduces its own run and predicts other N, and the wall
time is predicted part by part. Nothing here times anything: real runs are compared in tools/calibrate_check.py."""

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
from dualpar.testing.jobs import render

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
    cluster = dataclasses.replace(cluster, corun_slowdown=1.0)  # 2 processes on 2 cores: compute as measured
    two = simulate(dataclasses.replace(job, stages=2), model, cluster)
    b = predict_breakdown(report, stages=2, cluster=cluster)
    assert b["predicted_denoise_decode_s"] == pytest.approx(two.pipeline.makespan_s, rel=1e-6)
    started = b["phases"]["group_s"] + b["phases"]["collective_s"]
    assert predict_from_report(report, stages=2, cluster=cluster) == pytest.approx(
        1.25 + two.latency_s + started, rel=1e-6
    )


def test_the_wall_time_is_predicted_part_by_part() -> None:
    *_, report = _synthetic()
    cluster = load_cluster("cpu2")
    one = predict_breakdown(report, stages=1, cluster=cluster)
    assert one["phases"] == one["measured_phases"]
    assert one["phases"]["group_s"] == one["phases"]["collective_s"] == 0.0
    previous = one
    for n in (2, 3):
        b = predict_breakdown(report, stages=n, cluster=cluster)
        p = b["phases"]
        assert b["predicted_wall_s"] == pytest.approx(sum(p.values()), rel=1e-12)
        assert p["group_s"] == pytest.approx(cluster.group_start_s(n)) and p["group_s"] > 0
        assert p["collective_s"] > previous["phases"]["collective_s"]
        # every rank builds its stage at once: loading slows down like compute; encoding is rank 0's alone
        assert p["load_s"] == pytest.approx(1.25 * cluster.compute_slowdown(n))
        assert p["encode_s"] == one["phases"]["encode_s"] and p["fixed_s"] == one["phases"]["fixed_s"]
        assert b["predicted_slowdown"] == pytest.approx(cluster.compute_slowdown(n))
        previous = b


def test_compute_slowdown_on_a_shared_cpu() -> None:
    cpu = dataclasses.replace(load_cluster("cpu2"), corun_slowdown=1.1)
    assert cpu.compute_slowdown(1) == 1.0
    assert cpu.compute_slowdown(2) == pytest.approx(1.1)  # both cores busy
    assert cpu.compute_slowdown(3) == pytest.approx(1.5 * 1.1)  # and 3 processes on 2 cores
    assert load_cluster("8xh100").compute_slowdown(8) == 1.0
    assert cpu.group_start_s(1) == 0.0 < cpu.group_start_s(2) < cpu.group_start_s(3)


def test_messages_cost_the_stages_their_own_time() -> None:
    *_, report = _synthetic()
    cluster = load_cluster("cpu2")
    free = dataclasses.replace(cluster, link=dataclasses.replace(cluster.link, send_cpu_us=0.0, recv_cpu_us=0.0))
    costly = dataclasses.replace(cluster, link=dataclasses.replace(cluster.link, send_cpu_us=2e3, recv_cpu_us=1e3))
    for n in (2, 3):
        cheap = predict_breakdown(report, stages=n, cluster=free)["predicted_denoise_decode_s"]
        dear = predict_breakdown(report, stages=n, cluster=costly)["predicted_denoise_decode_s"]
        passes = report["plan"]["n_blocks"] * report["plan"]["steps"]
        assert dear - cheap >= 0.5 * passes * 3e-3  # about a send and a receive per pass on the slowest stage


def _engine_style(report: dict, gap_s: float, conditions: float) -> dict:
    """The synthetic report as the engine writes it: a render_s phase longer than stage 0's spans by `gap_s`
    per pass, and every compute span starting with a nested conditions span (`conditions` of its length)."""
    report = json.loads(json.dumps(report))
    passes = report["plan"]["n_blocks"] * report["plan"]["steps"]
    phases = report["phases"]
    phases["render_s"] = phases["denoise_s"] + phases["decode_s"] + gap_s * passes
    report["wall_s"] += gap_s * passes
    for st in report["timeline"]["stages"]:
        nested = [
            {
                "kind": "conditions",
                "item": sp["item"],
                "t0": sp["t0"],
                "t1": sp["t0"] + conditions * (sp["t1"] - sp["t0"]),
            }
            for sp in st["spans"]
            if sp["kind"] == "compute"
        ]
        st["spans"] += nested
    return report


def test_stage0_gaps_and_per_stage_conditioning_are_measured_and_charged() -> None:
    _, _, _, result, report = _synthetic()
    plain = calibrate(report)
    engine = _engine_style(report, gap_s=0.01, conditions=0.25)
    t = calibrate(engine)
    assert plain.stage0_gap_s == 0.0 and t.stage0_gap_s == pytest.approx(0.01)
    assert t.conditions_s > 0 and t.layer_s < plain.layer_s
    assert predict_breakdown(engine, stages=1)["predicted_wall_s"] == pytest.approx(engine["wall_s"], rel=1e-9)
    # the same total compute, but every stage computes its own conditioning: more stages pay it more often
    spread = predict_breakdown(_engine_style(report, 0.01, 0.0), stages=3)["predicted_denoise_decode_s"]
    assert predict_breakdown(engine, stages=3)["predicted_denoise_decode_s"] > spread


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
        st["spans"] = merged + nested + [sp for sp in st["spans"] if sp["kind"] not in ("embed", "compute", "head")]
    t = calibrate(report)
    assert t.layer_s == pytest.approx(result.costs.layer_s)
    assert t.embed_s == pytest.approx(result.costs.embed_s)


def test_one_stage_report_predicts_a_three_stage_run() -> None:
    """The logic a real 1-stage/3-stage comparison exercises, without timing anything: a 1-stage report predicts
    the simulator's own 3-stage run; the extra ranks add a process group and collectives; 3 processes on 2
    cores slow every stage's compute. (Real runs are compared in tools/calibrate_check.py, a benchmark.)"""
    model, cluster, job, _, report = _synthetic()
    roomy = dataclasses.replace(cluster, corun_slowdown=1.0, cores=8)  # every process on a core of its own
    three = simulate(dataclasses.replace(job, stages=3), model, roomy)
    b = predict_breakdown(report, stages=3, cluster=roomy)
    assert b["predicted_denoise_decode_s"] == pytest.approx(three.pipeline.makespan_s, rel=1e-6)
    one = predict_breakdown(report, stages=1, cluster=roomy)
    assert one["phases"]["group_s"] == one["phases"]["collective_s"] == 0.0
    assert b["phases"]["group_s"] == pytest.approx(roomy.group_start_s(3)) and b["phases"]["collective_s"] > 0
    assert b["outside_s"] == pytest.approx(one["outside_s"] + b["phases"]["group_s"] + b["phases"]["collective_s"])
    crowded = predict_breakdown(report, stages=3, cluster=cluster)  # 3 processes on 2 cores
    assert (
        crowded["predicted_slowdown"] == pytest.approx(cluster.compute_slowdown(3)) and cluster.compute_slowdown(3) > 1
    )
    assert crowded["predicted_denoise_decode_s"] > b["predicted_denoise_decode_s"]


REAL_JOB = [
    "frames=65",
    "height=64",
    "width=64",
    "schedule.steps=4",
    "output.video=false",
    "output.latents=true",
    "parallel.threads=1",
    "launcher=spawn",
]


def test_reports_carry_the_measurements_the_model_reads(tmp_path) -> None:
    """Rank 0's process-group, close and gather times, each rank's start time and load time, and the nested
    conditions/embed/head spans inside every compute span (summarised in report.json, every span in trace.json
    with output.trace=true), so the model need not infer them."""
    report = render(tmp_path / "run", [*REAL_JOB, "parallel.stages=1", "output.trace=true"])
    phases = report["phases"]
    assert all(phases[k] >= 0 for k in ("group_s", "close_s", "gather_s"))
    rest = report["wall_s"] - phases["load_s"] - phases["encode_s"] - phases["render_s"]
    assert phases["group_s"] + phases["close_s"] + phases["gather_s"] <= rest
    stage = report["stages"][0]
    assert stage["start_time"] <= report["restart"]["render_started_at"] and 0 < stage["load_s"] <= phases["load_s"]
    kinds = stage["timeline"]["kinds"]
    passes = report["plan"]["passes"]
    for kind in ("compute", "conditions", "embed", "head"):
        assert kinds[f"{kind}/plain"]["n"] + kinds.get(f"{kind}/right", {"n": 0})["n"] == passes
    events = json.loads((tmp_path / "run" / "trace.json").read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    computes = {s["args"]["item"]: s for s in spans if s["name"] == "compute"}
    for kind in ("conditions", "embed", "head"):
        nested = [s for s in spans if s["name"] == kind]
        assert len(nested) == passes
        for s in nested:
            outer = computes[s["args"]["item"]]
            assert outer["ts"] <= s["ts"] <= s["ts"] + s["dur"] <= outer["ts"] + outer["dur"] + 1e-3
    assert calibrate(report).conditions_s > 0
