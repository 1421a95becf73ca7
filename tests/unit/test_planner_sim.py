"""The planner uses the performance model: cluster=<preset> prints an estimate and a suggested layout, and the
model calibrated on a real run's report reproduces that run."""

from __future__ import annotations

import pytest

from dualpar.cli import run
from dualpar.sim.calibrate import predict_breakdown
from dualpar.testing.jobs import compose, render


def test_plan_only_with_cluster_prints_estimate_and_suggestion(tmp_path, capsys):
    code = run(compose(["cluster=8xh100", "plan_only=true", "frames=129", "height=128", "width=128",
                        "parallel.stages=2", "launcher=spawn", f"output.dir={tmp_path}"]))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "estimate on 8xh100 (8 x H100" in err and "latency " in err
    line = next(x for x in err.splitlines() if "suggestion:" in x)
    assert "parallel.stages=" in line and "schedule.block_latents=" in line


def test_calibration_on_a_real_report_reproduces_it(tmp_path):
    report = render(tmp_path, ["model=small", "frames=41", "height=96", "width=96", "schedule.steps=3",
                               "output.video=false", "output.latents=true", "parallel.threads=1"])
    assert report["plan"]["hidden_bytes"] > 0 and report["threads_per_process"] == 1
    b = predict_breakdown(report, stages=1, cluster="cpu2")
    assert b["predicted_wall_s"] == pytest.approx(report["wall_s"], rel=1e-9)  # carried over: load, encode
    # the replay of the measured per-layer costs through the plan gives back the measured render phase
    assert b["predicted_denoise_decode_s"] == pytest.approx(report["phases"]["render_s"], rel=0.15)
    two = predict_breakdown(report, stages=2, cluster="cpu2")["predicted_denoise_decode_s"]
    assert 0 < two < b["predicted_denoise_decode_s"], "two stages are predicted faster than one"
