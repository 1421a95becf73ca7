"""The job driver on a Ray cluster of several raylets on this host (`ray.cluster_utils.Cluster`), losing one.

A head without CPUs (the driver's) and three 1-CPU nodes: a stage reserves a whole node, so a 2-stage job's
placement group spans two raylets and its stages talk gloo between them (env:// rendezvous on rank 0's node).
The queue: `spread` (2 stages), `beside` (1 stage, on the third node at the same time) and `wide` (3 stages,
queued). Rank 1 of `spread` hangs at iteration 5 (once) and its node is removed (raylet and workers killed).
The driver tears the group down and restarts it on the two nodes left, as soon as `beside` frees its node;
`wide` fitted the three nodes but not the two left, so it waits (no failure) until a replacement node joins.
Every job has the same config but its stage count, so all three equal one single-process render, bit for bit.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from dualpar.driver import JobDriver, compose_job  # noqa: E402
from dualpar.launch.ray import WORKER_MODULE  # noqa: E402
from dualpar.testing.jobs import load_latents, render  # noqa: E402

pytestmark = pytest.mark.slow

# Nodes are declared dead after 2 missed 0.5 s health checks (Ray's default waits 15 s before rescheduling).
SYSTEM_CONFIG = {
    "preload_python_modules": [WORKER_MODULE],
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 2,
}


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": SYSTEM_CONFIG},
    )
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # every raylet, GCS and worker process of this module


def _job(name: str, out: Path, stages: int, **extra) -> dict:
    entry = {"name": name, "model": "tiny", "frames": 49, "schedule": {"steps": 3},
             "output": {"dir": str(out), "latents": True, "video": False},
             "parallel": {"stages": stages, "threads": 1, "timeout_s": 60},
             "ray": {"cpus_per_stage": 1, "ready_timeout_s": 240}}  # fmt: skip
    return entry | extra


def _nodes_of(pg_bundles: int) -> list[str]:
    """Node ids of the (only) live placement group with this many bundles, by bundle index."""
    for pg in ray.util.placement_group_table().values():
        if pg["state"] == "CREATED" and len(pg["bundles"]) == pg_bundles:
            return [pg["bundles_to_node_id"][i] for i in range(pg_bundles)]
    return []


def _wait_for(condition, deadline: float, lines: list[str]) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"the driver never got there: {lines}"
        time.sleep(0.05)


@pytest.mark.timeout(420)
def test_lost_node_restarts_the_group_on_the_rest_and_queued_jobs_wait(cluster, tmp_path):
    stall = {"stall_rank": 1, "stall_at_iteration": 5}
    entries = [
        _job("spread", tmp_path / "spread", 2, checkpoint={"every": 2}, debug=stall),
        _job("beside", tmp_path / "beside", 1),
        _job("wide", tmp_path / "wide", 3),
    ]
    jobs = [compose_job(e, i) for i, e in enumerate(entries)]
    lines: list[str] = []
    driver = JobDriver(jobs, tmp_path / "driver_report.json", poll_s=0.2, status_every_s=30.0, emit=lines.append)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(driver.run()), name="driver", daemon=True)
    runner.start()  # the driver in a thread: Ray adds nodes from the main thread only
    deadline = time.monotonic() + 300
    try:  # on failure the fixture's cluster shutdown ends every job (and the driver thread with them)
        marker = tmp_path / "spread" / "checkpoint" / "stalled-rank1-iter5.json"
        _wait_for(marker.exists, deadline, lines)  # rank 1 of spread hangs: its node goes away
        spread_nodes = _nodes_of(2)
        (lost,) = [n for n in cluster.list_all_nodes() if n.node_id == spread_nodes[1]]
        cluster.remove_node(lost, allow_graceful=False)
        _wait_for(lambda: driver.jobs[0].status not in ("queued", "running"), deadline, lines)
        cluster.add_node(num_cpus=1)  # a replacement: wide fits again
    finally:
        runner.join(timeout=max(1.0, deadline - time.monotonic()))
    assert result == [0], lines
    report = json.loads((tmp_path / "driver_report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["done"] * 3, lines

    assert len(set(spread_nodes)) == 2, "the 2-stage group spanned two raylets"
    spread = report["jobs"][0]
    assert spread["restarts"] == 1, spread["attempts"]
    on_disk = json.loads((tmp_path / "spread" / "report.json").read_text())
    assert on_disk["restart"]["resumed_from_iteration"] == 4
    assert any(line.startswith("[driver] wide: waiting: needs {'CPU': 3.0}") for line in lines), lines
    assert report["jobs"][2]["started_at"] > spread["finished_at"], "wide ran on the replacement node"

    alone = tmp_path / "alone"
    render(alone, ["frames=49", "schedule.steps=3", "output.latents=true", "output.video=false"])
    for name in ("spread", "beside", "wide"):
        assert torch.equal(load_latents(tmp_path / name), load_latents(alone)), name
