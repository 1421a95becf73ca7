"""Two torchrun agents on this host act as two nodes (`--nnodes 2`, c10d rendezvous on a loopback endpoint).

Each agent has its own address (127.0.0.1 and 127.0.0.2, both loopback) and its own `--nproc-per-node`, so the
pipeline's stages span both "nodes" and talk gloo across them. c10d orders nodes by address: the first agent's
processes are the first stages, and stage 0 (which writes every output and checkpoint) runs under it. The
environment is the one launch/torchrun.sh sets for two real nodes (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: each
attempt gets a fresh store, since torchrun's restart count differs between agents). Outputs are compared bit
for bit with the single-process render; the restart test SIGKILLs a rank of the second agent mid-run and the
whole group resumes from stage 0's last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dualpar.testing.jobs import load_latents, render

pytestmark = pytest.mark.slow

BASE = ["model=tiny", "frames=49", "schedule.steps=3", "output.latents=true", "parallel.threads=1"]
BASE += ["parallel.timeout_s=60"]
AGENTS_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> torch.Tensor:
    out = tmp_path_factory.mktemp("alone")
    render(out, [*BASE, "output.video=false"])
    return load_latents(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_agents(out: Path, nprocs: tuple[int, ...], max_restarts: int, extra: list[str]) -> list[str]:
    """Start one torchrun agent per entry of `nprocs` (its --nproc-per-node), wait for all; their logs.

    Every agent is the leader of its own process group; whatever is left of any group is killed on the way out.
    """
    port, stages = _free_port(), sum(nprocs)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    job = [*BASE, "output.video=false", "output.progress=false", "launcher=torchrun", f"parallel.stages={stages}",
           f"output.dir={out}", *extra]  # fmt: skip
    procs, logs = [], [out.parent / f"{out.name}-agent{node}.log" for node in range(len(nprocs))]
    try:
        for node, n in enumerate(nprocs):
            cmd = [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(nprocs)),
                "--nproc-per-node", str(n), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-id", out.name, "--rdzv-conf", f"is_host={int(node == 0)}",
                "--local-addr", f"127.0.0.{node + 1}", "--max-restarts", str(max_restarts),
                "-m", "dualpar.cli", *job,
            ]  # fmt: skip
            with open(logs[node], "w") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + AGENTS_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"torchrun agents did not finish in {AGENTS_TIMEOUT_S} s:\n{_tails(logs)}")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the agent and every worker it started
            proc.wait()
    texts = [path.read_text() for path in logs]
    assert [p.returncode for p in procs] == [0] * len(procs), _tails(logs)
    return texts


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())


@pytest.mark.timeout(300)
def test_two_agents_with_three_stages_equal_one_process(alone, tmp_path):
    """1 process on the first node, 2 on the second: stages 0 | 1, 2."""
    logs = _run_agents(tmp_path / "two-nodes", (1, 2), max_restarts=0, extra=[])
    assert "-> latents:" in logs[0] and "-> latents:" not in logs[1], "stage 0 runs on the first node"
    assert torch.equal(load_latents(tmp_path / "two-nodes"), alone)


@pytest.mark.timeout(300)
def test_rank_killed_on_second_agent_restarts_both_and_resumes_identically(alone, tmp_path):
    """Rank 1 (the second node's only process) dies at iteration 5. Its agent restarts it, the first agent
    sees the new rendezvous round and restarts stage 0, and the group resumes from iteration 4's checkpoint."""
    out = tmp_path / "killed"
    resume = ["checkpoint.every=2", "resume=auto", "debug.kill_rank=1", "debug.kill_at_iteration=5"]
    _run_agents(out, (1, 1), max_restarts=1, extra=resume)
    assert (out / "checkpoint" / "killed-rank1-iter5.json").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["restart"]["resumed_from_iteration"] == 4
    assert torch.equal(load_latents(out), alone)
