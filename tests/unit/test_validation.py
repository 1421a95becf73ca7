"""Bad input exits with code 2 and one message naming the key and the fix, before any weights load,
and never touches a previous run's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dualpar.cli import run
from dualpar.testing.jobs import compose

CASES = [
    (["frames=0"], "frames"),
    (["schedule.block_latents=2", "schedule.context_latents=3"], "schedule.context_latents"),
    (["model=wan2.1-t2v-1.3b"], "model.path"),
    (["height=100"], "height"),
    (["width=72"], "width"),
    (["prompt=''"], "prompt"),
    (["schedule.steps=0"], "schedule.steps"),
    (["parallel.stages=9", "launcher=spawn"], "parallel.stages"),
    (["parallel.stages=2"], "launcher"),
    (["parallel.stages=2", "launcher=spawn", "parallel.split=[1,2]"], "parallel.split"),
    (["schedule.left_context=behind"], "schedule.left_context"),
    (["output.video=false", "output.latents=false"], "output.video"),
    (["launcher=mpi"], "launcher"),
    (["job=av", "audio.codec=opus"], "audio.codec"),
    (["job=av", "audio.mode=aligned", "output.fps=24"], "audio.mode"),
    (["job=av", "audio.init=checkpoint", "audio.checkpoint=/nonexistent/tower"], "audio.checkpoint"),
    (["job=av", "audio.codec=oobleck", "audio.codec_path=/nonexistent/vae"], "audio.codec_path"),
    (["job=av", "audio.sync_guidance=3.0", "schedule.guidance=1.0"], "audio.sync_guidance"),
    (["job=av", "audio.width_ratio=0.3"], "audio.width_ratio"),
    (["job=av", "+audio.gain=2"], "audio.gain"),
    (["+audio.guidance=2"], "audio"),
    (["debug.stall_rank=1"], "debug.stall_rank"),
    (["job=video", "+bogus=1"], "bogus"),
]


@pytest.mark.parametrize("overrides,key", CASES)
def test_bad_option_names_key_and_exits_2(tmp_path, capsys, overrides, key):
    code = run(compose([f"output.dir={tmp_path / 'out'}", *overrides]))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"dualpar: error: {key}:"), err
    assert "Fix:" in err
    assert not (tmp_path / "out").exists(), "nothing was created"


def test_malformed_and_missing_checkpoint_dirs(tmp_path, capsys):
    assert run(compose([f"model.path={tmp_path / 'nope'}", f"output.dir={tmp_path / 'o'}"])) == 2
    assert "model.path" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / "transformer").mkdir(parents=True)
    (bad / "model_index.json").write_text("{not json")
    assert run(compose([f"model.path={bad}", f"output.dir={tmp_path / 'o'}"])) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (bad / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "WanTransformer3DModel"]}))
    assert run(compose([f"model.path={bad}", f"output.dir={tmp_path / 'o'}"])) == 2
    assert "names no vae" in capsys.readouterr().err


def test_prompt_timeline_validation(tmp_path, capsys):
    late = "prompt=[{frame:5,text:a},{frame:9,text:b}]"
    assert run(compose([late, f"output.dir={tmp_path}"])) == 2
    assert "prompt[0].frame" in capsys.readouterr().err
    past = "prompt=[{frame:0,text:a},{frame:99,text:b}]"
    assert run(compose([past, "frames=33", f"output.dir={tmp_path}"])) == 2
    assert "prompt[1].frame" in capsys.readouterr().err


def test_unwritable_output_dir_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run(compose([f"output.dir={blocker / 'out'}"])) == 2
    assert "output.dir" in capsys.readouterr().err


def test_previous_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    (tmp_path / "video.mp4").write_bytes(b"previous run")
    assert run(compose([f"output.dir={tmp_path}", "plan_only=true"])) == 2
    assert "output.overwrite=true" in capsys.readouterr().err
    assert (tmp_path / "video.mp4").read_bytes() == b"previous run"
    assert run(compose([f"output.dir={tmp_path}", "plan_only=true", "output.overwrite=true"])) == 0


def test_cli_process_exit_code_and_plan_only(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    bad = subprocess.run(
        [sys.executable, "-m", "dualpar.cli", "model=tiny", "height=100", f"output.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "height: 100 is not a positive multiple of 16" in bad.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "dualpar.cli",
            "model=tiny",
            "plan_only=true",
            "frames=129",
            "parallel.stages=3",
            "launcher=spawn",
            f"output.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "stage 2: layers 2..3" in ok.stderr and "blocks in flight: 4" in ok.stderr
    assert not any(tmp_path.iterdir()), "plan_only writes nothing"
