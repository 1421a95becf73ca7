"""A dead or stuck peer is reported with its rank within parallel.timeout_s, and every rank exits non-zero:
the launch fails promptly instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

COMMON = ["model=tiny", "frames=45", "schedule.steps=3", "output.video=false", "output.latents=true",
          "launcher=spawn", "parallel.stages=2", "parallel.threads=1", "output.progress=false"]


def _run(tmp_path, extra, timeout_s):
    cmd = [sys.executable, "-m", "dualpar.cli", *COMMON, f"parallel.timeout_s={timeout_s}",
           f"output.dir={tmp_path / 'out'}", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    return proc, time.monotonic() - t0


@pytest.mark.timeout(400)
def test_dead_and_stuck_peers_fail_fast_naming_the_rank(tmp_path):
    dead, _ = _run(tmp_path / "dead", ["debug.kill_rank=1", "debug.kill_at_iteration=2"], timeout_s=60)
    assert dead.returncode == 1, dead.stderr[-2000:]
    assert "pipeline failed:" in dead.stderr and "rank 1 exit -9" in dead.stderr
    assert "rank 0 exit" in dead.stderr, "stage 0 noticed the dead peer and exited non-zero"
    assert not (tmp_path / "dead" / "out" / "latents.safetensors").exists(), "no partial result at the final path"

    stuck, took = _run(tmp_path / "stuck", ["debug.stall_rank=1", "debug.stall_at_iteration=2"], timeout_s=4)
    assert stuck.returncode == 1, stuck.stderr[-2000:]
    assert "rank 1 did not complete within 0:00:04" in stuck.stderr
    assert "rank 0 exit 1" in stuck.stderr and "rank 1 exit -9" in stuck.stderr, "the stuck rank was killed"
    assert took < 120, "the launch ends within the timeout plus the launcher's grace period (and start-up)"
