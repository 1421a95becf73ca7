"""Typed config (issue 12.7): every bad value exits 2 before any weights load, naming the key and the fix.

Most cases run the CLI's validation in-process on the composed config; a representative handful run the real
`dualpar` command in a subprocess (exit code 2, one message line, no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dualpar.cli import run
from dualpar.testing.jobs import compose

CASES = [
    (["frames=abc"], "frames", "an integer"),
    (["frames=1.5"], "frames", "an integer"),
    (["frames="], "frames", "empty"),
    (["frames=true"], "frames", "an integer"),
    (["seed=abc"], "seed", "an integer"),
    (["seed=1.5"], "seed", "an integer"),
    (["seed=2**70"], "seed", "an integer"),
    (["seed=1180591620717411303424"], "seed", "2**63"),
    (["seed=-1"], "seed", "2**63"),
    (["parallel.threads=-1"], "parallel.threads", "at least 1"),
    (["parallel.threads=0"], "parallel.threads", "at least 1"),
    (["height=65536"], "height", "positional range"),
    (["schedule.guidance=nan"], "schedule.guidance", "finite"),
    (["schedule.guidance=inf"], "schedule.guidance", "finite"),
    (["parallel.timeout_s=abc"], "parallel.timeout_s", "a number"),
    (["prompt=[]"], "prompt", "timeline"),
    (["prompt=5"], "prompt", "timeline"),
    (["prompt=[{frame:x,text:a}]"], "prompt[0].frame", "an integer"),
    (["output.dir=''"], "output.dir", "empty"),
    (["output.latents=maybe"], "output.latents", "true or false"),
    (["parallel.split=[1,a]", "parallel.stages=2", "launcher=spawn"], "parallel.split", "list of integers"),
    (["model.dtype=1"], "model.dtype", "a string"),
    (["launcher=torchrun"], "launcher", "not started by torchrun"),
    (["model.device=cuda"], "model.device", "CUDA"),
    (["frames=1000000000"], "frames", "per job"),
    (["+parallel.stagez=2"], "parallel.stagez", "did you mean parallel.stages"),
    (["+seeed=2"], "seeed", "did you mean seed"),
    (["resume=maybe"], "resume", "false, true or auto"),
]


@pytest.mark.parametrize("overrides,key,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_value_exits_2_naming_key(tmp_path, capsys, monkeypatch, overrides, key, words):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on GPU machines
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    code = run(compose([f"output.dir={tmp_path / 'out'}", *overrides]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"dualpar: error: {key}:"), err
    assert words in err and "Fix:" in err, err
    assert not (tmp_path / "out").exists(), "nothing was created"


def test_checkpoint_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "ck").write_text("not a dir")
    assert run(compose([f"output.dir={tmp_path / 'o'}", f"checkpoint.dir={tmp_path / 'ck'}"])) == 2
    assert "checkpoint.dir:" in capsys.readouterr().err


def _model_dir(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, copy)
    return copy


def test_broken_model_directories(tmp_path, capsys, tiny_checkpoint):
    """A truncated weight file, a config that is not a JSON object, a config missing keys, no tokenizer."""

    def check(model: Path, words: str) -> None:
        assert run(compose([f"model.path={model}", f"output.dir={tmp_path / 'o'}"])) == 2
        err = capsys.readouterr().err
        assert err.startswith("dualpar: error: model.path:") and words in err, err

    model = _model_dir(tiny_checkpoint, tmp_path)
    assert run(compose([f"model.path={model}", f"output.dir={tmp_path / 'o'}", "plan_only=true"])) == 0
    capsys.readouterr()
    weights = sorted((model / "transformer").glob("*.safetensors"))[0]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    check(model, "truncated")
    weights.write_bytes(data)
    config = model / "transformer" / "config.json"
    good = config.read_text()
    config.write_text("[1, 2]")
    check(model, "not an object")
    broken = json.loads(good)
    del broken["text_dim"]
    config.write_text(json.dumps(broken))
    check(model, "text_dim")
    config.write_text(good)
    for f in (model / "tokenizer").iterdir():
        f.unlink()
    check(model, "tokenizer")


def test_real_cli_representative_errors(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    for args, key in ((["frames=abc"], "frames"), (["launcher=torchrun"], "launcher"), (["seeed=1"], "seeed")):
        cmd = [sys.executable, "-m", "dualpar.cli", "model=tiny", f"output.dir={tmp_path}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"error: {key}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir())


def _leaves(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("attention", "audio", "cluster"):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def test_fingerprint_covers_output_changing_keys(tmp_path):
    """Every key is in the restart fingerprint unless it is listed with a reason; cfg_split is in (it changes
    the latents), threads is out (measured here: 1 and 2 threads give identical latents)."""
    import torch

    from dualpar.checkpoint import OUTPUT_INDEPENDENT, restart_fingerprint
    from dualpar.cli import prepare
    from dualpar.testing.jobs import load_latents, render

    cfg, _ = prepare(compose([f"output.dir={tmp_path / 'x'}"]))
    every = _leaves(json.loads(json.dumps(cfg.to_dict(), default=str)))
    printed = _leaves(restart_fingerprint(cfg))
    assert every == printed | {k for k in every if k in OUTPUT_INDEPENDENT or k.split(".")[0] in OUTPUT_INDEPENDENT}
    assert "parallel.cfg_split" in printed and "seed" in printed and "parallel.threads" not in printed
    job = ["frames=49", "schedule.steps=3", "output.latents=true", "output.video=false", "schedule.guidance=5"]
    latents = {}
    for name, extra in (
        ("t1", ["parallel.threads=1"]),
        ("t2", ["parallel.threads=2"]),
        ("cfg", ["parallel.cfg_split=true"]),
    ):
        render(tmp_path / name, [*job, *extra])
        latents[name] = load_latents(tmp_path / name)
    assert torch.equal(latents["t1"], latents["t2"]), "threads would have to join the fingerprint"
    assert not torch.equal(latents["t1"], latents["cfg"]), "cfg_split changes the output"
