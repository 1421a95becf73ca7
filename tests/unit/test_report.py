"""report.json stays small as the video grows (summaries only); spans go to trace.json when asked; the report
records the versions, device and dtype actually used."""

from __future__ import annotations

import json

import diffusers
import pytest
import torch

import dualpar
from dualpar.sim.calibrate import calibrate
from dualpar.testing.jobs import render

JOB = ["height=32", "width=32", "schedule.steps=3", "output.video=false", "output.latents=true", "parallel.threads=1"]


def test_report_size_does_not_grow_with_frames_and_trace_holds_the_spans(tmp_path) -> None:
    short = render(tmp_path / "short", [*JOB, "frames=17"])
    long = render(tmp_path / "long", [*JOB, "frames=97", "output.trace=true"])
    assert long["plan"]["passes"] >= 4 * short["plan"]["passes"]
    size = {name: (tmp_path / name / "report.json").stat().st_size for name in ("short", "long")}
    # per-block entries and block starts are the only lists that grow: tens of bytes a block
    assert size["long"] - size["short"] < 3000, size
    assert "timeline" not in long and all("spans" not in st for st in long["stages"])
    assert not (tmp_path / "short" / "trace.json").exists()

    events = json.loads((tmp_path / "long" / "trace.json").read_text())["traceEvents"]
    computes = [e for e in events if e["ph"] == "X" and e["name"] == "compute"]
    summary = long["stages"][0]["timeline"]["kinds"]
    assert len(computes) == long["plan"]["passes"] == summary["compute/plain"]["n"] + summary["compute/right"]["n"]
    total = sum(summary[k]["s"] for k in ("compute/plain", "compute/right"))
    assert sum(e["dur"] for e in computes) / 1e6 == pytest.approx(total)
    assert not (tmp_path / "long" / "trace.parts").exists()
    assert long["trace"]["missing_ranks"] == []
    assert calibrate(long).samples == long["plan"]["passes"]

    assert long["versions"] == {
        "dualpar": dualpar.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cuda": torch.version.cuda,
    }
    assert long["runtime"] == {"device": "cpu", "name": "cpu", "dtype": "float32"}
