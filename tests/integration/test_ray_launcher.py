"""launcher=ray and the job driver on a local 2-CPU Ray cluster (one `ray.init` for the module).

The driver runs two jobs at once on fractional CPUs: a 2-stage job whose rank 1 is SIGKILLed mid-run (the
launcher notices, tears the group down and restarts it from the last checkpoint) and a 1-stage job. A second
queue holds one job of each kind (video, sparse_video, av) read from a jobs file, as `dualpar-driver` does; the
example file launch/jobs.yaml must compose. Each job's latents (and decoded frames) equal its standalone
single-process render. Few actor starts: each one imports torch and diffusers, the dominant cost on a small
machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from dualpar.driver import JobDriver, compose_job, load_jobs  # noqa: E402
from dualpar.launch.ray import connect, stage_bundle, start_local_cluster  # noqa: E402
from dualpar.sinks.probe import read_frames  # noqa: E402
from dualpar.testing.jobs import load_latents, render  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLE_JOBS = Path(__file__).resolve().parents[2] / "launch" / "jobs.yaml"


@pytest.fixture(scope="module")
def cluster():
    start_local_cluster(num_cpus=2, log_to_driver=False)  # idle workers import the worker module ahead
    yield
    ray.shutdown()


def _job(name: str, out, frames: int, **extra) -> dict:
    entry = {"name": name, "model": "tiny", "frames": frames, "schedule": {"steps": 3},
             "output": {"dir": str(out), "latents": True}}
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
    # detection is recorded (its speed is measured by tools/bench_faults.py; timing is not a test's business)
    assert a["restarts"] == 1 and failed["killed"]["rank"] == 1 and failed["detect_s"] > 0
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


def _overrides(entry: dict, prefix: str = "") -> list[str]:
    """A jobs-file entry as the `dualpar` command's overrides, for its standalone single-stage render."""
    skip = {"name", "output.dir", "parallel.stages"}
    out: list[str] = []
    for key, value in entry.items():
        if isinstance(value, dict):
            out += _overrides(value, f"{prefix}{key}.")
        elif f"{prefix}{key}" not in skip:
            out.append(f"{prefix}{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out


def test_example_jobs_file_composes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its relative output dirs must not hold a previous run's outputs
    jobs = load_jobs(EXAMPLE_JOBS)
    assert [cfg.job for _, cfg in jobs] == ["video", "sparse_video", "av"]
    assert len({cfg.output.dir for _, cfg in jobs}) == 3
    assert all(cfg.model.name == "toyworld" and cfg.launcher == "ray" for _, cfg in jobs)


@pytest.mark.timeout(300)
def test_driver_runs_one_job_of_each_kind_from_a_jobs_file(cluster, tmp_path):
    """video, 2-stage sparse_video and av (an AAC track in video.mp4) from one jobs file, side by side: four
    half-CPU actors fill the cluster, so all three start at once."""
    import av

    entries = [
        _job("video", tmp_path / "video", 25, job="video", seed=3),
        _job("sparse", tmp_path / "sparse", 33, job="sparse_video", seed=1, parallel={"stages": 2},
             attention={"num_q_clusters": 4, "num_k_clusters": 8, "density": 0.3}),
        _job("av", tmp_path / "av", 21, job="av", seed=2, height=32, width=32, audio={"wav": True}),
    ]
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(json.dumps({"jobs": entries}))  # JSON is YAML
    jobs = load_jobs(jobs_file)
    assert [cfg.job for _, cfg in jobs] == ["video", "sparse_video", "av"]
    lines: list[str] = []
    driver = JobDriver(jobs, tmp_path / "driver_report.json", poll_s=0.2, status_every_s=5.0, emit=lines.append)
    assert driver.run() == 0, lines
    report = json.loads((tmp_path / "driver_report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["done"] * 3, lines
    assert [j["stages"] for j in report["jobs"]] == [1, 2, 1]
    frames = {e["name"]: e["frames"] for e in entries}
    assert {j["name"]: j["frames_written"] for j in report["jobs"]} == frames

    total = math.ceil(frames["av"] * 16000 / 16)  # model tiny: 16 fps, tiny codec: 16 kHz
    with av.open(str(tmp_path / "av" / "video.mp4")) as box:
        stream = box.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.rate == 16000
        decoded = sum(frame.samples for frame in box.decode(audio=0))
    assert total <= decoded < total + 1024, (decoded, total)  # AAC pads the last frame, never drops samples
    assert (tmp_path / "av" / "audio.wav").is_file()

    for entry in entries:
        name = entry["name"]
        render(tmp_path / f"{name}-alone", _overrides(entry))
        got, alone = load_latents(tmp_path / name), load_latents(tmp_path / f"{name}-alone")
        assert torch.equal(got, alone), f"{name}: max diff {(got - alone).abs().max()}"
    assert (read_frames(tmp_path / "av" / "video.mp4") == read_frames(tmp_path / "av-alone" / "video.mp4")).all()
