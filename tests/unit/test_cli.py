"""The command line: --help from the config reference, --version, `python -m dualpar`, and Hydra's own errors
(override syntax, unknown groups and keys) exiting 2 with one clear message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dualpar
from dualpar.cli import cli
from dualpar.reference import documented_keys, group_options

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_group_option_and_key_with_its_meaning(capsys) -> None:
    assert cli(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dualpar {dualpar.__version__}: render a long video")
    lines = out.splitlines()
    for key in documented_keys():
        row = next((x for x in lines if x.split()[:1] == [key]), None)
        assert row is not None, f"--help does not list {key}"
        assert len(row.split()) >= 3, f"{key} has no default and meaning: {row!r}"
    for group in ("model", "job", "attention", "cluster"):
        row = next(x for x in lines if x.split()[:1] == [group])
        assert all(option in row for option in group_options(group))
    assert "  parallel.split_mode           even" in out
    assert "prompt=\"'a red ball, rolling'\"" in out


def test_version_is_dualpars_and_python_m_dualpar_runs_the_cli(capsys) -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert dualpar.__version__ == version
    assert cli(["--version"]) == 0
    assert capsys.readouterr().out == f"dualpar {version}\n"
    proc = subprocess.run(
        [sys.executable, "-m", "dualpar", "--version"],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=120,
    )
    assert (proc.returncode, proc.stdout) == (0, f"dualpar {version}\n"), proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=foo"], "dualpar: error: model: has no option 'foo'. Fix: choose one of: skyreels-v2-df-1.3b, small"),
        (["cluster=9xh100"], "dualpar: error: cluster: has no option '9xh100'. Fix: choose one of: 8x4090, 8xh100"),
        (
            ["paralel.stages=2"],
            "dualpar: error: paralel.stages: is not a known option. Fix: did you mean parallel.stages?",
        ),
        (
            ["prompt=a cat, walking"],
            "dualpar: error: prompt: the value a cat, walking has a comma, which Hydra "
            "reads as a list or a sweep. Fix: quote it as one string: "
            "prompt=\"'a cat, walking'\"",
        ),
        (["frames=[1"], "dualpar: error: frames=[1: cannot be parsed"),
        (["frames"], "dualpar: error: frames: cannot be parsed"),
        (["--cfg", "job"], "dualpar: error: unknown flag --cfg"),
    ],
)
def test_hydra_errors_exit_2_with_one_clear_message(capsys, args, message) -> None:
    assert cli([*args, "plan_only=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "Traceback" not in err and "hydra.cc" not in err


def test_a_wan_preset_is_planned_without_its_weights(capsys) -> None:
    assert cli(["model=wan2.1-t2v-14b", "plan_only=true", "frames=1025", "parallel.stages=8", "launcher=spawn"]) == 0
    err = capsys.readouterr().err
    assert "dualpar plan: model=wan2.1-t2v-14b (40 layers) 832x480, 1025 frames" in err
    assert "stage 7: layers 35..39 (5)" in err
    assert cli(["model=wan2.1-t2v-14b"]) == 2  # rendering does need them
    assert "model.path: model=wan2.1-t2v-14b needs its weights" in capsys.readouterr().err
