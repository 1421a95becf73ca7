"""The job driver: a queue of render jobs sharing one Ray cluster, each restarted from its checkpoints on failure.

Why it exists: a cluster renders many videos, and a job that fits beside another should not wait for it. Each
job is a full dualpar config (the same keys as the `dualpar` command, composed on top of the defaults). The
driver admits jobs in order while the cluster's free resources hold their whole placement group (first fit: a
small job may overtake a large one that does not fit yet), runs each through `RayRun` in its own thread (Ray's
API is thread-safe; tensors never pass through the driver), prints a status line whenever a job changes state
and a progress line now and then, and keeps `driver_report.json` current. Jobs are independent: every job's
outputs equal running it alone (same config, same seed). Capacity is that of the nodes alive now: when a node
is lost, its jobs' groups restart on the others (`RayRun`), and a queued job that no longer fits waits for
capacity to return instead of failing (only a job larger than the cluster ever was fails at once).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualpar.checkpoint import STATUS_FILE, Interrupted, checkpoint_dir
from dualpar.config import EngineConfig
from dualpar.errors import ConfigError
from dualpar.report import write_json_atomic

_EPS = 1e-6


@dataclass
class Job:
    """One job's configuration and live state."""

    name: str
    cfg: EngineConfig
    status: str = "queued"  # queued | running | done | failed | stopped
    run: Any = None  # RayRun while running
    thread: threading.Thread | None = None
    report: dict | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ray_info = (self.report or {}).get("ray", {})
        return {
            "name": self.name,
            "status": self.status,
            "output_dir": self.cfg.output.dir,
            "stages": self.cfg.parallel.stages,
            "progress": self.progress,
            "restarts": ray_info.get("restarts", 0),
            "attempts": ray_info.get("attempts", []),
            "outputs": (self.report or {}).get("outputs", {}),
            "frames_written": (self.report or {}).get("frames_written"),
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_s": (self.finished_at - self.started_at) if self.finished_at and self.started_at else None,
        }


def compose_job(entry: Mapping[str, Any], index: int) -> tuple[str, EngineConfig]:
    """One jobs-file entry -> (name, validated config). The entry's keys are the `dualpar` command's keys, nested
    (`output: {dir: ...}`) or dotted (`output.dir: ...`); group keys (`model: small`) pick config groups. The entry
    goes through the command's own composition and validation, so a bad key or value gets the same message, prefixed
    with the job's name. Jobs run with launcher=ray, progress lines off."""
    from dualpar.api import compose, prepare, to_overrides

    if not isinstance(entry, Mapping):
        raise ConfigError(f"jobs[{index}]", f"is {entry!r}", "give each job as a mapping of dualpar config keys")
    entry = dict(entry)
    name = str(entry.pop("name", f"job{index}"))
    try:
        raw = compose([*to_overrides(entry, {}), "launcher=ray", "output.progress=false"])
        cfg, _ = prepare(raw)
    except ConfigError as err:
        raise ConfigError(f"jobs[{index}] ({name}): {err.key}", err.problem, err.fix) from err
    except TypeError as err:  # a value the override grammar cannot carry
        raise ConfigError(f"jobs[{index}] ({name})", str(err), "give plain YAML scalars, lists or mappings") from err
    return name, cfg


def load_jobs(path: Path) -> list[tuple[str, EngineConfig]]:
    """Read and compose a YAML list of jobs; names and output directories must be distinct."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("jobs", f"{path} cannot be read ({err})", "give jobs=<a readable YAML file>") from err
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("jobs", f"{path} is not valid YAML{at}: {problem}", "fix the YAML syntax there") from err
    if isinstance(raw, Mapping) and "jobs" in raw:
        raw = raw["jobs"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("jobs", f"{path} holds no list of jobs", "write a YAML list: - {frames: 33, ...}")
    names: dict[str, int] = {}
    for i, entry in enumerate(raw):
        if isinstance(entry, Mapping) and "name" in entry:
            name = str(entry["name"])
            if name in names:
                raise ConfigError(
                    f"jobs[{i}] ({name}): name",
                    f"is also the name of jobs[{names[name]}]",
                    "give each job its own name",
                )
            names[name] = i
    jobs = [compose_job(entry, i) for i, entry in enumerate(raw)]
    seen: dict[str, str] = {}
    for name, cfg in jobs:
        out = str(Path(cfg.output.dir).expanduser().resolve())
        if out in seen:
            raise ConfigError(f"{name}: output.dir", f"{out} is also used by {seen[out]}", "give each job its own dir")
        seen[out] = name
    return jobs


class JobDriver:
    """Runs jobs on the connected Ray cluster; `run()` returns the exit code (0: every job done)."""

    def __init__(
        self,
        jobs: list[tuple[str, EngineConfig]],
        report_path: Path,
        poll_s: float = 1.0,
        status_every_s: float = 10.0,
        emit: Callable[[str], None] = print,
    ):
        self.jobs = [Job(name, cfg) for name, cfg in jobs]
        self.report_path = report_path
        self.poll_s = poll_s
        self.status_every_s = status_every_s
        self.emit = emit
        self._last_status = 0.0
        self._stopping = False
        self._shrunk: set[str] = set()  # queued jobs told that they wait for a lost node's capacity
        self._lock = threading.Lock()  # job threads and the main loop both update the report

    def run(self) -> int:
        import ray

        self.total = self.peak = {k: float(v) for k, v in ray.cluster_resources().items()}
        try:
            while any(j.status in ("queued", "running") for j in self.jobs):
                self._admit()
                self._poll()
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self._stop_all()
            self._write_report()
            return 130
        self._poll()
        self._write_report()
        return 0 if all(j.status == "done" for j in self.jobs) else 1

    def _admit(self) -> None:
        from dualpar.launch.ray import RayRun

        if self._stopping:
            return
        self._refresh_capacity()
        for job in self.jobs:
            if job.status != "queued":
                continue
            job.run = job.run or RayRun(job.cfg)
            demand = job.run.demand()
            if any(v > self.peak.get(k, 0.0) + _EPS for k, v in demand.items()):
                self._set(job, "failed", f"needs {demand} but the cluster has {self.peak}; it can never run")
                continue
            if any(v > self.total.get(k, 0.0) + _EPS for k, v in demand.items()):
                if job.name not in self._shrunk:  # it fitted before a node left: wait for capacity to return
                    self._shrunk.add(job.name)
                    self.emit(f"[driver] {job.name}: waiting: needs {demand}, the cluster has {self.total} now")
                continue
            if self._fits(demand):
                self._start(job)

    def _refresh_capacity(self) -> None:
        """Capacity follows the nodes alive now (a lost node shrinks it, a new one grows it); `peak` is the
        largest seen, which decides whether a job can ever run."""
        import ray

        self.total = {k: float(v) for k, v in ray.cluster_resources().items()}
        self.peak = {k: max(self.peak.get(k, 0.0), self.total.get(k, 0.0)) for k in self.peak | self.total}

    def _fits(self, demand: dict[str, float]) -> bool:
        used: dict[str, float] = {}
        for job in self.jobs:
            if job.status == "running":
                for k, v in job.run.demand().items():
                    used[k] = used.get(k, 0.0) + v
        return all(used.get(k, 0.0) + v <= self.total.get(k, 0.0) + _EPS for k, v in demand.items())

    def _start(self, job: Job) -> None:
        job.started_at = time.time()
        job.thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{job.name}", daemon=True)
        self._set(job, "running", None)
        job.thread.start()

    def _run_job(self, job: Job) -> None:
        try:
            job.report = job.run.run()
            status, error = "done", None
            frames = job.report["frames_written"]
            iterations = job.report["plan"]["iterations"]
            job.progress = {"state": "done", "iteration": iterations, "iterations": iterations}
            job.progress |= {"frames_written": frames, "frames": job.report["frames"], "time": time.time()}
        except Interrupted as err:
            status, error = "stopped", str(err)
        except Exception as err:  # the job failed for good (restarts used up, or a user error)
            status, error = "failed", f"{type(err).__name__}: {err}"
        job.finished_at = time.time()
        self._set(job, status, error)

    def _set(self, job: Job, status: str, error: str | None) -> None:
        with self._lock:
            self._set_locked(job, status, error)

    def _set_locked(self, job: Job, status: str, error: str | None) -> None:
        job.status, job.error = status, error
        line = f"[driver] {job.name}: {status}"
        if status == "running":
            line += f" ({job.cfg.parallel.stages} stages, {job.run.demand()}) -> {job.cfg.output.dir}"
        elif status == "done" and job.report is not None:
            outs = ", ".join(f"{k}: {v}" for k, v in job.report["outputs"].items())
            restarts = job.report.get("ray", {}).get("restarts", 0)
            line += f" in {job.finished_at - job.started_at:.1f} s, {restarts} restarts -> {outs}"
        elif error:
            line += f": {error}"
        self.emit(line)
        self._write_report_locked()

    def _poll(self) -> None:
        now = time.monotonic()
        loud = now - self._last_status >= self.status_every_s
        for job in self.jobs:
            if job.status != "running":
                continue
            status = _read_status(job.run.cfg)
            if status:
                job.progress = status
                if loud:
                    self.emit(
                        f"[driver] {job.name}: iteration {status['iteration']}/{status['iterations']}, "
                        f"frames {status['frames_written']}/{status['frames']}"
                    )
        if loud:
            self._last_status = now
            self._write_report()

    def _write_report(self) -> None:
        with self._lock:
            self._write_report_locked()

    def _stop_all(self) -> None:
        """Ctrl-C: running jobs checkpoint at their next iteration boundary and stop; queued ones never start."""
        self._stopping = True
        self.emit("[driver] stopping: running jobs checkpoint and stop (Ctrl-C again to abandon them)")
        for job in self.jobs:
            if job.status == "queued":
                self._set(job, "stopped", "driver stopped before the job started")
            elif job.status == "running":
                job.run.request_stop()
        for job in self.jobs:
            if job.thread is not None:
                job.thread.join()

    def _write_report_locked(self) -> None:
        data = {"updated_at": time.time(), "cluster": getattr(self, "total", {}), "jobs": []}
        data["jobs"] = [j.summary() for j in self.jobs]
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.report_path, data)


def _read_status(cfg: EngineConfig) -> dict[str, Any] | None:
    try:
        return json.loads((checkpoint_dir(cfg) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
