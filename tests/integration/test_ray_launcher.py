"""launcher=ray and the job driver on a local 2-CPU Ray cluster (one `ray.init` for the module).

The driver runs two jobs at once on fractional CPUs: a 2-stage job whose rank 1 is SIGKILLed mid-run (the
launcher notices, tears the group down and restarts it from the last checkpoint) and a 1-stage job. Each job's
latents and decoded frames equal its standalone single-process render. Few actor starts: each one imports torch
and diffusers, the dominant cost on a small machine.
"""

from __future__ import annotations

import json

import pytest
import torch

ray = pytest.importorskip("ray")

from dualpar.driver import JobDriver, compose_job  # noqa: E402
from dualpar.launch.ray import connect, stage_bundle, start_local_cluster  # noqa: E402
from dualpar.sinks.probe import read_frames  # noqa: E402
from dualpar.testing.jobs import load_latents, render  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    start_local_cluster(num_cpus=2, log_to_driver=False)  # idle workers import the worker module ahead
    yield
    ray.shutdown()


def _job(name: str, out, frames: int, **extra) -> dict:
    entry = {"name": name, "model": "tiny", "frames": frames, "schedule": {"steps": 3}, "output": {"dir": str(out), "latents": True}}
    entry["parallel"] = {"threads": 1, "timeout_s": 60, **extra.pop("parallel", {})}
    return entry | extra


@pytest.mark.timeout(300)
def test_driver_runs_jobs_concurrently_and_restarts_a_killed_rank(cluster, tmp_path):
    killed = _job("killed", tmp_path / "a", 49, parallel={"stages": 2}, checkpoint={"every": 2},
                  debug={"kill_rank": 1, "kill_at_iteration": 5}, ray={"max_restarts": 1})  # fmt: skip
    small = _job("small", tmp_path / "b", 17, seed=1)
    jobs = [compose_job(e, i) for i, e in enumerate([killed, small])]
    assert stage_bundle(jobs[0][1]) == {"CPU": 0.5} and connect(jobs[0][1]) is False
    lines: list[str] = []
    driver = JobDriver(jobs, tmp_path / "driver_report.json", poll_s=0.2, status_every_s=1.0, emit=lines.append)
    assert driver.run() == 0, lines
    report = json.loads((tmp_path / "driver_report.json").read_text())
    a, b = report["jobs"]
    assert a["status"] == b["status"] == "done", lines
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"], "they ran concurrently"
    assert a["progress"]["frames_written"] == 49 and b["progress"]["frames_written"] == 17
    assert any(line.startswith("[driver] killed: done") and "1 restarts" in line for line in lines), lines
    failed = a["attempts"][0]
    assert a["restarts"] == 1 and failed["killed"]["rank"] == 1 and 0 < failed["detect_s"] < 15
    assert failed["restart_s"] > 0
    on_disk = json.loads((tmp_path / "a" / "report.json").read_text())
    assert on_disk["restart"]["resumed_from_iteration"] == 4 and on_disk["ray"]["strategy"] == "STRICT_PACK"
    base = ["schedule.steps=3", "output.latents=true", "parallel.threads=1"]
    render(tmp_path / "a-alone", ["frames=49", *base])
    render(tmp_path / "b-alone", ["frames=17", "seed=1", *base])
    for name, frames in (("a", 49), ("b", 17)):
        assert torch.equal(load_latents(tmp_path / name), load_latents(tmp_path / f"{name}-alone"))
        got, alone = (read_frames(tmp_path / d / "video.mp4") for d in (name, f"{name}-alone"))
        assert len(got) == frames and (got == alone).all()
