"""The planner's advice can be pasted: its suggested overrides validate as they are printed, it names the
launcher several stages need, memory counts the model's own text encoder, and each idle figure says what it is."""

from __future__ import annotations

from dualpar.cli import cli
from dualpar.models.registry import read_model_info
from dualpar.sim.model import UMT5_XXL_ENCODER_PARAMS, WAN21_1_3B, from_diffusers_config, from_model_info


def _plan(capsys, args: list[str]) -> str:
    assert cli([*args, "plan_only=true"]) == 0, capsys.readouterr().err
    return capsys.readouterr().err


def _suggestion(err: str) -> list[str]:
    line = next(x for x in err.splitlines() if x.strip().startswith("suggestion:"))
    return line.split("suggestion:", 1)[1].split(" -> ")[0].split()


def test_suggested_overrides_paste_into_a_run_that_validates(capsys) -> None:
    for job in (
        ["cluster=cpu2", "parallel.stages=2", "launcher=spawn"],
        ["model=wan2.1-t2v-1.3b", "cluster=8xh100", "frames=321"],
    ):
        advice = _suggestion(_plan(capsys, job))
        assert advice[0].startswith("parallel.stages=")
        assert not any(a.startswith("parallel.split=") and not a.startswith("parallel.split=[") for a in advice)
        stages = int(advice[0].split("=")[1])
        assert ("launcher=spawn" in advice) == (stages > 1)
        pasted = _plan(capsys, [*job, *advice])
        assert f"stages: {stages}," in pasted


def test_the_default_model_is_not_charged_a_umt5_xxl(capsys) -> None:
    toy = from_model_info(read_model_info("toyworld", None))
    assert 0 < toy.text_encoder_params < 1e6 and toy.vae_params == 0  # word encoder, space-to-depth codec
    wan = from_model_info(read_model_info("wan2.1-t2v-1.3b", None, plan_only=True))
    assert wan.text_encoder_params == UMT5_XXL_ENCODER_PARAMS
    assert wan.total_params == WAN21_1_3B.total_params  # the plan's Wan shape is the simulator's preset
    assert from_diffusers_config(read_model_info("wan2.1-t2v-1.3b", None, plan_only=True).transformer).dim == 1536
    err = _plan(capsys, ["cluster=cpu2"])
    assert "(does not fit)" not in err


def test_each_idle_figure_says_what_it_measures(capsys) -> None:
    err = _plan(capsys, ["cluster=cpu2", "parallel.stages=2", "launcher=spawn"])
    assert "pipeline bubble 0.001 (the schedule's fill and drain alone;" in err
    assert "idle " in err and "(mean fraction of the render each stage waits: pipeline fill and drain" in err


def test_the_simulator_takes_the_cli_model_names() -> None:
    import argparse
    import importlib.util
    from pathlib import Path

    from dualpar.reference import group_options
    from dualpar.sim.model import PRESETS

    path = Path(__file__).resolve().parents[2] / "tools" / "simulate.py"
    spec = importlib.util.spec_from_file_location("simulate_tool", path)
    tool = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(tool)
    assert set(PRESETS) <= set(group_options("model"))
    for name in ("toyworld", "tiny", "small", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        model = tool.build_model(argparse.Namespace(model=name, model_path=None))
        assert model.name == name and model.num_layers > 0
