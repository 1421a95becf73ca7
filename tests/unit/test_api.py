"""dualpar.render: the CLI's keys and validation from Python, returning the output paths and the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dualpar
from dualpar.api import hydra_value, to_overrides
from dualpar.cli import cli
from dualpar.errors import ConfigError

JOB = [
    "model=tiny",
    "frames=33",
    "schedule.steps=2",
    "output.video=false",
    "output.latents=true",
    "output.progress=false",
]


def test_a_render_through_the_api_equals_the_cli(tmp_path, capsys) -> None:
    assert cli([*JOB, "prompt='a red ball, rolling'", f"output.dir={tmp_path / 'cli'}"]) == 0
    result = dualpar.render(
        model="tiny",
        frames=33,
        prompt="a red ball, rolling",
        schedule={"steps": 2},
        output={"video": False, "latents": True, "progress": False, "dir": tmp_path / "api"},
        log=None,
    )
    assert result.outputs["latents"] == tmp_path / "api" / "latents.safetensors"
    assert result.report is not None and result.report["frames_written"] == 0 and result.report["blocks"] == 4
    assert result.config is not None and result.config.prompt[0].text == "a red ball, rolling"
    api = load_file(str(result.outputs["latents"]))["latents"]
    assert torch.equal(api, load_file(str(tmp_path / "cli" / "latents.safetensors"))["latents"])
    # the same job as key=value strings, as on the command line
    again = dualpar.render([*JOB, "prompt='a red ball, rolling'", f"output.dir={tmp_path / 'strings'}"], log=None)
    assert torch.equal(api, load_file(str(again.outputs["latents"]))["latents"])


def test_bad_options_raise_the_cli_message(capsys) -> None:
    cases = [
        ({"model": "tiny", "schedule": {"context_latents": 5}}, ["model=tiny", "schedule.context_latents=5"]),
        ({"model": "nope"}, ["model=nope"]),
        ({"model": "tiny", "paralel": {"stages": 2}}, ["model=tiny", "paralel.stages=2"]),
    ]
    for kwargs, argv in cases:
        with pytest.raises(ConfigError) as err:
            dualpar.render(plan_only=True, log=None, **kwargs)
        assert cli([*argv, "plan_only=true"]) == 2
        assert capsys.readouterr().err.strip() == f"dualpar: error: {err.value}"


def test_plan_only_returns_the_plan_and_no_outputs(capsys) -> None:
    result = dualpar.render({"model": "tiny", "parallel.stages": 2, "launcher": "spawn", "plan_only": True})
    assert result.report is None and result.outputs == {}
    assert "stage 1: layers 2..3 (2)" in result.plan and result.plan in capsys.readouterr().err


def test_python_values_become_hydra_overrides() -> None:
    assert hydra_value("it's a, b") == "'it\\'s a, b'"
    assert hydra_value(Path("/a b")) == "'/a b'"
    assert hydra_value([3, 5]) == "[3,5]" and hydra_value(None) == "null" and hydra_value(True) == "true"
    timeline = [{"frame": 0, "text": "red, ball"}, {"frame": 16, "text": "blue"}]
    assert to_overrides({"parallel.split": [3, 5]}, {"model": "tiny", "prompt": timeline}) == [
        "parallel.split=[3,5]",
        "model=tiny",
        "prompt=[{frame:0,text:'red, ball'},{frame:16,text:'blue'}]",
    ]
    with pytest.raises(TypeError):
        to_overrides("frames=33", {})
