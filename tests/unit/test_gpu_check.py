"""tools/gpu_check.py runs: its CPU mode (tiny shapes) goes through every part and writes the JSON; without
CUDA the GPU mode exits 2 with a message."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.py"


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_exits_2_with_a_message(tmp_path, capsys) -> None:
    assert _tool().main(["--out", str(tmp_path / "gpu.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "gpu.json").exists()


def test_cpu_tiny_mode_runs_every_part(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    assert _tool().main(["--device", "cpu", "--tiny", "--iters", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["ok"] and data["runtime"]["device"] == "cpu" and data["versions"]["torch"] == torch.__version__
    a, b, c = data["a_render_vs_cpu"], data["b_two_stages_one_device"], data["c_stage_speed"]
    assert a["rel_rms_error"] == 0.0  # the same device twice: identical
    assert b["ok"] and b["max_abs_diff"] <= b["tolerance"]
    kernels = {(r["kernel"], r["compile"]) for r in c["rows"]}
    assert {("native", False), ("native", True)} <= kernels
    for row in c["rows"]:
        assert row["finite"] and row["layer_ms"] > 0 and row["tflops"] > 0, row
