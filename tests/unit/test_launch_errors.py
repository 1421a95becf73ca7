"""Launch-time problems are configuration errors too: an output directory that cannot be made, or launcher=ray
without Ray installed, exit 2 naming the key and the fix (no traceback)."""

from __future__ import annotations

import importlib.util

import pytest

from dualpar.api import compose, prepare
from dualpar.cli import cli
from dualpar.errors import ConfigError


def test_an_output_dir_that_cannot_be_made_exits_2(capsys):
    assert cli(["model=tiny", "frames=9", "output.dir=/proc/dualpar-cannot-exist"]) == 2
    err = capsys.readouterr().err
    assert "dualpar: error: output.dir: cannot be used:" in err and "Fix: choose a writable directory" in err


def test_launcher_ray_without_ray_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        prepare(compose(["model=tiny", "launcher=ray", f"output.dir={tmp_path}"]))
    assert err.value.key == "launcher" and "pip install 'dualpar[ray]'" in str(err.value)
