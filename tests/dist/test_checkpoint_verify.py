"""Checkpoints carry a SHA-256; a damaged newest one is passed over, loudly (issue 12.5); a full disk while
writing one removes the partial file and keeps the previous checkpoint usable (issue 12.8).

Real bytes on disk: 64 flipped bytes and a truncation of the newest real checkpoint; a real ENOSPC from a
small tmpfs under checkpoint.dir (skipped where this process may not mount one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dualpar.checkpoint import latest_checkpoint
from dualpar.cli import prepare, run
from dualpar.config import EngineConfig
from dualpar.errors import ConfigError
from dualpar.testing.crash import crash_in_process
from dualpar.testing.jobs import compose, load_latents, render

BASE = ["frames=49", "schedule.steps=3", "output.latents=true", "parallel.threads=1", "parallel.timeout_s=60"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    render(out, BASE)
    return out


def _cli(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dualpar.cli", "model=tiny", *BASE, f"output.dir={out}", "output.progress=false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*cmd, *overrides], capture_output=True, text=True, env=env, timeout=300)


def _flip(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + count] = bytes(b ^ 0xFF for b in data[mid : mid + count])
    path.write_bytes(bytes(data))


@pytest.mark.timeout(400)
def test_damaged_newest_checkpoint_falls_back_and_resumes_exactly(tmp_path, monkeypatch, reference):
    out = tmp_path / "job"
    crash = ["checkpoint.every=2", "debug.kill_rank=0", "debug.kill_at_iteration=5"]
    crash_in_process(monkeypatch, out, [*BASE, *crash])
    ckpt = out / "checkpoint"
    newest, older = ckpt / "iter-000004.pt", ckpt / "iter-000002.pt"
    assert newest.is_file() and older.is_file()
    saved = tmp_path / "saved"
    shutil.copytree(ckpt, saved)
    resume = [f"output.dir={out}", *BASE, "resume=true"]

    with newest.open("r+b") as f:  # truncated newest: the previous one is used
        f.truncate(newest.stat().st_size // 2)
    cfg, _ = prepare(compose(resume))
    ref = latest_checkpoint(ckpt)
    assert ref.iteration == 2 and "truncated" in ref.skipped[0] and "iter-000004" in ref.skipped[0]

    _flip(older)  # none intact: exit 2, nothing resumed, nothing deleted
    with pytest.raises(ConfigError, match="no checkpoint .* is intact"):
        prepare(compose(resume))
    assert run(compose(resume)) == 2
    assert run(compose([*resume[:-1], "resume=auto"])) == 2, "resume=auto does not silently start over"
    assert newest.exists() and older.exists()

    shutil.copy(saved / older.name, older)
    shutil.copy(saved / newest.name, newest)
    _flip(newest)  # 64 flipped bytes, same size: only the checksum notices
    done = _cli(out, "resume=true", "checkpoint.every=2")
    assert done.returncode == 0, done.stderr
    assert "iter-000004.pt fails its SHA-256 check" in done.stderr and "resuming from iter-000002" in done.stderr
    assert "Traceback" not in done.stderr
    assert torch.equal(load_latents(out), load_latents(reference))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return shutil.which("mount") is not None and subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.mark.timeout(400)
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, reference):
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "1m"):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        out = tmp_path / "job"
        # iteration 2's checkpoint (~0.2 MB) fits; iteration 4's (~1.8 MB: the decoder cache) cannot
        full = _cli(out, f"checkpoint.dir={small}", "checkpoint.every=2")
        assert full.returncode == 2, full.stderr
        assert "error: checkpoint.dir:" in full.stderr
        assert "filled up while writing checkpoint iter-000004" in full.stderr
        assert "previous checkpoint iter-000002 is intact" in full.stderr and "resume=true" in full.stderr
        assert "Traceback" not in full.stderr
        assert sorted(p.name for p in small.iterdir() if p.name.startswith(("iter-", ".iter-"))) == [
            "iter-000002.json",
            "iter-000002.pt",
        ], "the partial file is gone"
        assert latest_checkpoint(small).iteration == 2
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        done = _cli(out, f"checkpoint.dir={small}", "checkpoint.every=2", "resume=true")
        assert done.returncode == 0, done.stderr
        assert torch.equal(load_latents(out), load_latents(reference))
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


@pytest.mark.timeout(300)
def test_automatic_restarts_are_validated(tmp_path, monkeypatch):
    """Ray's and torchrun's restarts (resume=auto injected) run the same validation as a first start: the
    per-block sparse warm start, which a resume cannot reproduce, is refused instead of silently diverging."""
    from dualpar.validate import prepare_job, restart_config

    out = tmp_path / "sparse"
    sparse = ["job=sparse_video", "attention.num_q_clusters=4", "attention.num_k_clusters=8", "output.video=false"]
    crash = ["checkpoint.every=2", "debug.kill_rank=0", "debug.kill_at_iteration=5"]
    crash_in_process(monkeypatch, out, [*BASE, *sparse, *crash])
    cfg = EngineConfig.from_mapping(compose([f"output.dir={out}", *BASE, *sparse]))
    with pytest.raises(ConfigError, match="attention.centroid_init"):  # RayRun restarts through this
        prepare_job(restart_config(cfg))
    env = {"TORCHELASTIC_RESTART_COUNT": "1", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="attention.centroid_init"):  # torchrun: every rank's CLI validates
        prepare(compose([f"output.dir={out}", *BASE, *sparse, "launcher=torchrun"]))
