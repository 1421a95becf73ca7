"""launcher=ray: one Ray actor per stage in a placement group, restarted from the last checkpoint on failure.

Ray does placement and liveness; tensors still travel over torch.distributed between the actors (Ray's
object store is 15x slower than gloo for hidden states, and Compiled Graph teardown can hang). Each actor runs
the same `worker_main` as every other launcher. The driver side here picks per-stage resources, packs the group
(STRICT_PACK when one node holds every stage, else PACK), sets up the rendezvous (env:// with MASTER_ADDR/PORT
taken from rank 0's node: nothing assumes the stages share a host or a directory), and watches the run calls
with `ray.wait`. When any worker dies (a killed process, a lost node) the group is torn down and started again
with `resume=auto` (validated again, as every start is), up to `ray.max_restarts` times, packed anew on the
nodes still alive (its placement group waits, up to `ray.ready_timeout_s`, until they have room); the output
equals an uninterrupted run. The driver process holds the job's directory lock throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dualpar.checkpoint import STOP_FILE, Interrupted, checkpoint_dir, kill_markers, stopped
from dualpar.config import EngineConfig
from dualpar.errors import ConfigError, PeerError
from dualpar.report import write_json_atomic
from dualpar.run_lock import run_lock
from dualpar.topology import WorkerContext
from dualpar.validate import prepare_job, restart_config

WORKER_MODULE = "dualpar.launch.worker"


class _StageActor:
    """Hosts one rank: reports where it runs, then runs `worker_main` once."""

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

    def run(self, ctx: WorkerContext, cfg: EngineConfig, env: dict[str, str]) -> dict:
        import os

        os.environ.update(env)
        from dualpar.launch.worker import worker_main  # already imported by a preloaded worker

        return worker_main(ctx, cfg)


_Actor = ray.remote(_StageActor)


def connect(cfg: EngineConfig) -> bool:
    """Join (`ray.address`) or start a Ray cluster unless this process already has one; True if started here."""
    if ray.is_initialized():
        return False
    r = cfg.ray
    if r.address is None:
        start_local_cluster(r.num_cpus, r.num_gpus)
    else:
        ray.init(address=r.address)
    return True


def start_local_cluster(num_cpus: int | None = None, num_gpus: int | None = None, **kwargs: Any) -> None:
    """A Ray instance on this machine whose idle workers import the worker module ahead of time (torch +
    diffusers take seconds to import; a prestarted worker makes a stage actor, or its replacement after a
    fault, ready at once)."""
    preload = {"preload_python_modules": [WORKER_MODULE]}
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _system_config=preload, **kwargs)


def stage_bundle(cfg: EngineConfig) -> dict[str, float]:
    """Resources one stage actor reserves (fractional CPUs, or actors stay pending on small hosts)."""
    gpus = cfg.ray.gpus_per_stage
    if gpus is None:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        gpus = 1.0 if has_gpu and cfg.model.device != "cpu" else 0.0
    cpus = cfg.ray.cpus_per_stage
    if cpus is None:
        cpus = 1.0 if gpus else 0.5
    bundle = {"CPU": float(cpus)}
    if gpus:
        bundle["GPU"] = float(gpus)
    return bundle


def _strategy(cfg: EngineConfig, bundle: dict[str, float]) -> str:
    if cfg.ray.placement != "auto":
        return cfg.ray.placement
    n = cfg.parallel.stages
    for node in ray.nodes():
        if node.get("Alive") and all(node["Resources"].get(k, 0) >= v * n for k, v in bundle.items()):
            return "STRICT_PACK"
    return "PACK"


@dataclass
class _Group:
    """One attempt's placement group and actors."""

    pg: Any
    actors: list
    ips: list[str]

    def teardown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(self.pg)


class RayRun:
    """One job on a Ray cluster: start the group, watch it, restart it from the last checkpoint on failure.

    `on_poll` is called about every `poll_s` while the job runs (the job driver prints progress from it).
    """

    def __init__(self, cfg: EngineConfig, on_poll: Callable[[], None] | None = None, poll_s: float = 1.0):
        self.cfg = cfg = absolute_paths(cfg)  # actors may run in another working directory
        self.on_poll = on_poll
        self.poll_s = poll_s
        self.ckpt_dir = checkpoint_dir(cfg)
        self.attempts: list[dict[str, Any]] = []
        self.stopping = False
        self.signal_name: str | None = None  # the signal that asked this run to stop, if one did
        self.bundle = stage_bundle(cfg)
        self.strategy = _strategy(cfg, self.bundle)

    def demand(self) -> dict[str, float]:
        """The whole group's resources (what the job driver admits jobs by)."""
        return {k: v * self.cfg.parallel.stages for k, v in self.bundle.items()}

    def request_stop(self) -> None:
        """Ask stage 0 to checkpoint at the next iteration boundary and stop (resume later with resume=true)."""
        self.stopping = True
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (self.ckpt_dir / STOP_FILE).touch()

    def run(self) -> dict:
        """Run to the end (restarting as needed) while holding the job's directory lock. Run from the main thread
        (the `dualpar` command), SIGTERM/SIGINT become a stop request: stage 0 checkpoints at the next iteration
        boundary and the run ends with Interrupted naming the signal; a second signal tears the group down."""
        with run_lock(self.cfg), self._signals_request_stop():
            try:
                return self._run()
            except Interrupted as stop:
                if self.signal_name is not None and stop.reason != self.signal_name:
                    raise Interrupted(stop.iteration, self.signal_name, stop.path) from None
                raise

    @contextlib.contextmanager
    def _signals_request_stop(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # under the job driver, which owns the signals and calls request_stop itself
            return

        def handle(signum: int, frame: Any) -> None:
            if self.signal_name is not None:
                raise KeyboardInterrupt  # a second signal: stop now (the group is torn down)
            self.signal_name = signal.Signals(signum).name
            self.request_stop()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> dict:
        cfg = self.cfg
        while True:
            attempt = {"attempt": len(self.attempts), "started_at": time.time()}
            self.attempts.append(attempt)
            group = self._start_group(cfg, attempt)
            try:
                report, error = self._watch(group, cfg)
            finally:
                group.teardown()
            if error is None:
                return self._finish(report)
            attempt["error"] = f"{type(error).__name__}: {error}"
            restarts = len(self.attempts) - 1
            if not _restartable(error) or restarts >= cfg.ray.max_restarts:
                raise _unwrap(error)
            cfg = prepare_job(restart_config(cfg))  # every restart is validated like a first start

    def _start_group(self, cfg: EngineConfig, attempt: dict[str, Any]) -> _Group:
        n = cfg.parallel.stages
        self.strategy = _strategy(cfg, self.bundle)  # a restart packs onto the nodes alive now
        pg = placement_group([dict(self.bundle) for _ in range(n)], strategy=self.strategy)
        try:
            ray.get(pg.ready(), timeout=cfg.ray.ready_timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            remove_placement_group(pg)
            raise ConfigError(
                "ray.cpus_per_stage",
                f"{n} stages x {self.bundle} ({self.strategy}) found no room within {cfg.ray.ready_timeout_s} s; "
                f"cluster has {ray.cluster_resources()}",
                "lower parallel.stages or ray.cpus_per_stage / ray.gpus_per_stage, or add nodes",
            ) from err
        actors = [
            _Actor.options(
                num_cpus=self.bundle["CPU"],
                num_gpus=self.bundle.get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r),
                max_restarts=0,
            ).remote()
            for r in range(n)
        ]
        try:
            ips = ray.get([a.node_ip.remote() for a in actors], timeout=cfg.ray.ready_timeout_s)
        except Exception:
            _Group(pg, actors, []).teardown()
            raise
        attempt["ready_at"] = time.time()
        attempt["nodes"] = sorted(set(ips))
        return _Group(pg, actors, ips)

    def _rendezvous(self, group: _Group) -> tuple[str, dict[str, str]]:
        """Rank 0 hosts the store on its own node: every rank reaches it by address, wherever it runs."""
        port = ray.get(group.actors[0].free_port.remote())
        return "env://", {"MASTER_ADDR": group.ips[0], "MASTER_PORT": str(port)}

    def _watch(self, group: _Group, cfg: EngineConfig) -> tuple[dict | None, BaseException | None]:
        init, env = self._rendezvous(group)
        n = len(group.actors)
        refs = [a.run.remote(WorkerContext(r, n, 0, init), cfg, env) for r, a in enumerate(group.actors)]
        report, pending = None, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
            if self.on_poll is not None:
                self.on_poll()
            for ref in done:
                try:
                    out = ray.get(ref)
                except Exception as err:  # a dead actor, or a rank that raised: the whole group is restarted
                    self._record_failure(err)
                    return None, self._stop_error(refs[0]) if self.stopping else err
                if ref == refs[0]:
                    report = out
        return report, None

    def _stop_error(self, rank0_ref) -> BaseException:
        """After `request_stop`, rank 0's Interrupted (peers may fail first when it leaves): never a restart."""
        try:
            ray.get(rank0_ref, timeout=self.cfg.parallel.timeout_s)
        except Exception as err:
            if isinstance(_cause(err), Interrupted):
                return _cause(err)
        return stopped(self.signal_name or "a stop request", self.ckpt_dir)

    def _record_failure(self, err: BaseException) -> None:
        attempt = self.attempts[-1]
        attempt["detected_at"] = time.time()
        deaths = [m for m in kill_markers(self.ckpt_dir) if m["time"] >= attempt["started_at"]]
        if deaths:  # injected faults leave their time of death: measure how long noticing took
            attempt["killed"] = deaths[-1]
            attempt["detect_s"] = attempt["detected_at"] - deaths[-1]["time"]

    def _finish(self, report: dict) -> dict:
        started = report.get("restart", {}).get("render_started_at")
        for prev in self.attempts[:-1]:
            prev["restart_s"] = None
        if len(self.attempts) > 1 and started is not None:
            failed = self.attempts[-2]
            failed["restart_s"] = started - failed["detected_at"]  # detection -> resumed rendering
            failed["group_ready_s"] = self.attempts[-1]["ready_at"] - failed["detected_at"]
        report["ray"] = {
            "bundle": self.bundle,
            "strategy": self.strategy,
            "restarts": len(self.attempts) - 1,
            "attempts": self.attempts,
        }
        write_json_atomic(Path(self.cfg.output.dir) / "report.json", report)
        return report


def absolute_paths(cfg: EngineConfig) -> EngineConfig:
    """The same job with output, checkpoint and model paths made absolute (relative to this process)."""
    out = str(Path(cfg.output.dir).expanduser().resolve())
    ckpt = str(checkpoint_dir(cfg).resolve())
    model = cfg.model
    if model.path is not None:
        model = dataclasses.replace(model, path=str(Path(model.path).expanduser().resolve()))
    return cfg.replace(
        output=dataclasses.replace(cfg.output, dir=out),
        checkpoint=dataclasses.replace(cfg.checkpoint, dir=ckpt),
        model=model,
    )


def _cause(err: BaseException) -> BaseException:
    cause = getattr(err, "cause", None)  # RayTaskError keeps the worker's exception here
    return cause if isinstance(cause, BaseException) else err


def _restartable(err: BaseException) -> bool:
    """A dead or failed worker restarts the group; user errors and requested stops do not."""
    return not isinstance(_cause(err), ConfigError | Interrupted)


def _unwrap(err: BaseException) -> BaseException:
    cause = _cause(err)
    if isinstance(cause, ConfigError | Interrupted | PeerError):
        return cause
    if isinstance(err, ray.exceptions.RayActorError):
        return PeerError(f"a stage actor died and ray.max_restarts is used up: {err}")
    return err


def ray_launch(cfg: EngineConfig) -> dict:
    """Run one job on Ray (starting a local cluster when `ray.address` is null); returns rank 0's report."""
    started = connect(cfg)
    try:
        return RayRun(cfg).run()
    finally:
        if started:
            ray.shutdown()
