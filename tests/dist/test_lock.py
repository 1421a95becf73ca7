"""One run per output directory, and nothing of an unfinished run deleted without output.overwrite (issue 12.1-2).

Real processes: run A stalls (alive, holding the lock) after writing checkpoints and segments; run B, another
seed into the same directory, exits 2 naming A and touches nothing. A is SIGKILLed: its lock file stays behind
but the kernel released the flock, so run C is not blocked, yet finds A's unfinished run and refuses to delete
it without `resume=true` or `output.overwrite=true`. `resume=true` then completes A's video exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dualpar.run_lock import LOCK_NAME
from dualpar.testing.jobs import load_latents, render

BASE = [
    "model=tiny",
    "frames=49",
    "schedule.steps=3",
    "output.latents=true",
    "parallel.threads=1",
    "output.progress=false",
]


def _cli(out: Path, *overrides: str, wait: bool = True):
    cmd = [sys.executable, "-m", "dualpar.cli", *BASE, f"output.dir={out}", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


@pytest.mark.timeout(400)
def test_second_run_refused_stale_lock_reported_and_resume_completes(tmp_path):
    out = tmp_path / "shared"
    a = _cli(out, "seed=0", "checkpoint.every=2", "debug.stall_rank=0", "debug.stall_at_iteration=5", wait=False)
    try:
        deadline = time.monotonic() + 200
        while not (out / "checkpoint" / "iter-000004.json").exists():
            assert a.poll() is None, a.communicate()[1]
            assert time.monotonic() < deadline, "run A never reached its stall"
            time.sleep(0.2)
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == a.pid
        before = _snapshot(out)
        time.sleep(1.0)
        while (now := _snapshot(out)) != before:  # A writes a last segment, then stalls for good
            before = now
            time.sleep(1.0)
        b = _cli(out, "seed=1")
        assert b.returncode == 2, b.stderr
        assert f"pid {a.pid}" in b.stderr and "in use by another dualpar run" in b.stderr
        assert "Traceback" not in b.stderr
        assert b.stderr.count("\n") == 1, "one line"
        assert _snapshot(out) == before, "the refused run touched nothing"
        # the lock is also taken when validation passed first (the race): acquire in-process fails the same way
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=60)
    assert (out / LOCK_NAME).exists(), "a killed holder leaves its lock file"
    c = _cli(out, "seed=0")
    assert c.returncode == 2, c.stderr
    assert "unfinished run" in c.stderr and "resume=true" in c.stderr and "output.overwrite=true" in c.stderr
    assert f"pid {a.pid}" in c.stderr and "no longer running" in c.stderr
    assert (out / "checkpoint" / "iter-000004.pt").exists() and list((out / "video.parts").glob("*.mp4"))
    d = _cli(out, "seed=0", "checkpoint.every=2", "resume=true")
    assert d.returncode == 0, d.stderr
    assert "no longer running" in d.stderr and "Taking it over" in d.stderr, "the stale lock is reported"
    assert not (out / LOCK_NAME).exists(), "a finished run releases its lock"
    ref = tmp_path / "reference"
    render(ref, BASE[1:])
    assert torch.equal(load_latents(out), load_latents(ref))


def test_output_and_checkpoint_dirs_are_both_locked(tmp_path):
    """A second process cannot take either held directory (validation refuses it with the key); release
    lets the next run in."""
    from dualpar.cli import prepare
    from dualpar.run_lock import run_lock
    from dualpar.testing.jobs import compose

    ck = tmp_path / "ck"
    cfg, _ = prepare(compose([f"output.dir={tmp_path / 'o'}", f"checkpoint.dir={ck}"]))
    code = (
        "import sys; from dualpar.cli import run; from dualpar.testing.jobs import compose\n"
        "sys.exit(run(compose(['output.dir={}', 'checkpoint.dir={}', 'plan_only=true'])))\n"
    )

    def other(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code.format(out, ck)], capture_output=True, text=True, timeout=120)

    with run_lock(cfg, emit=False) as locks:
        assert [lock.key for lock in locks] == ["output.dir", "checkpoint.dir"]
        same_out = other(tmp_path / "o")
        assert same_out.returncode == 2 and "error: output.dir:" in same_out.stderr, same_out.stderr
        same_ckpt = other(tmp_path / "elsewhere")
        assert same_ckpt.returncode == 2 and "error: checkpoint.dir:" in same_ckpt.stderr, same_ckpt.stderr
        assert f"pid {os.getpid()}" in same_ckpt.stderr
    assert not (tmp_path / "o" / LOCK_NAME).exists() and not (ck / LOCK_NAME).exists()
    assert other(tmp_path / "o").returncode == 0
