"""Iteration-boundary restart state: what stage 0 saves, where it lives, and how a run continues from it.

docs/algorithm.md ("Contracts: Restart"): at an iteration boundary with no pass in flight, everything that decides
the rest of the video sits on stage 0: the block queue (latents, previous versions, per-block solver objects,
noise pool and generator state), the stream decoder's cache, the sinks' progress and the measurements so far.
Relay stages carry nothing across iterations: their feature cache is read only by passes with a right
neighbour, and the first pass of every iteration (the tail) has none but rewrites the cache. So a resumed job
restarts every rank at the saved iteration and renders the same video as one that never stopped.

Files in the checkpoint dir (`checkpoint.dir`, default `<output.dir>/checkpoint`):
  iter-000012.pt     the state (torch.save, weights_only=False for solver objects); tmp + fsync + rename
  iter-000012.json   small metadata written after the .pt: iteration, bytes, SHA-256, restart fingerprint;
                     a resume verifies size and checksum and falls back to an older checkpoint if they fail
  STOP               create it to make stage 0 checkpoint at the next iteration boundary and exit
  status.json        stage 0's progress (iteration, frames), for the job driver
  killed-rank1-iter5.json   fault-injection markers: `debug.kill_rank` fires once, across restarts
  stalled-rank1-iter5.json  (and `debug.stall_rank`, which also fires once)
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dualpar.config import EngineConfig
from dualpar.errors import ConfigError
from dualpar.report import write_json_atomic

STATE_VERSION = 1
STOP_FILE = "STOP"
STATUS_FILE = "status.json"
# The keys that may change between a run and its resume because the video does not depend on them, each with
# the reason; every other key (a new one included) is part of the restart fingerprint. tests/unit/
# test_validation_types.py::test_fingerprint_covers_output_changing_keys keeps this list honest.
OUTPUT_INDEPENDENT = {
    "launcher": "every launcher runs the same ranks (docs/algorithm.md 'Equivalence')",
    "resume": "how this start finds its checkpoint",
    "plan_only": "never renders",
    "checkpoint": "where and how often restart state is saved",
    "debug": "fault injection",
    "ray": "placement and restarts",
    "cluster": "the planner's estimate only",
    "parallel.stages": "bit-identical for any stage count (docs/algorithm.md 'Equivalence')",
    "parallel.split": "as stages: which rank runs a layer does not change its arithmetic",
    "parallel.split_mode": "as parallel.split",
    "parallel.timeout_s": "failure detection",
    "parallel.max_sends_in_flight": "flow control",
    "parallel.transport": "moves the same bytes",
    "parallel.threads": "CPU kernels split work across threads by output element, not by reduction, so "
    "1 and 2 threads give bit-identical latents (measured on tiny and toyworld); torch's default "
    "differs between machines, so a fingerprint of it would refuse legitimate resumes",
    "output.dir": "where, not what",
    "output.overwrite": "what happens to old files",
    "output.progress": "terminal output",
    "output.trace": "a timing file",
    "output.worker": "where the same decode and writes run; a checkpoint drains the worker first",
    "output.queue_blocks": "as output.worker",
}


class Interrupted(RuntimeError):
    """Stage 0 stopped on request (signal or STOP file) after writing a checkpoint (iteration -1: stopped
    before it could write one)."""

    def __init__(self, iteration: int, reason: str, path: Path):
        self.iteration = iteration
        self.reason = reason
        self.path = path
        self.exit_code = 128 + int(signal.SIGINT if reason == "SIGINT" else signal.SIGTERM)
        if iteration < 0:
            again = resume_command("output.overwrite=true")
            text = f"stopped by {reason} before the first checkpoint; start over with {again}"
        else:
            again = resume_command()
            text = f"stopped by {reason} at iteration {iteration}, checkpoint {path}; continue with {again}"
        super().__init__(text)

    def __reduce__(self) -> tuple:  # crosses process boundaries (Ray, multiprocessing)
        return (Interrupted, (self.iteration, self.reason, self.path))


def stopped(reason: str, directory: Path) -> Interrupted:
    """The stop to report when stage 0's own word did not arrive: resume from the newest valid checkpoint in
    `directory` if there is one (never advise discarding checkpoints that exist), else start over."""
    ref = latest_checkpoint(directory)
    if ref is None:
        return Interrupted(-1, reason, directory)
    return Interrupted(ref.iteration, reason, ref.state_path)


def resume_command(extra: str = "resume=true") -> str:
    """This process's command line with `extra` (replacing any resume= / output.overwrite=), when it was the
    dualpar command; otherwise a description of it."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name not in ("dualpar", "cli.py", "__main__.py"):
        return f"the same command plus {extra}"
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank of torchrun: its command line is not this process's
        return f"the same torchrun command plus {extra}"
    prog = ["dualpar"] if name == "dualpar" else [sys.executable, "-m", "dualpar"]
    args = [a for a in sys.argv[1:] if not a.startswith(("resume=", "output.overwrite=", extra.split("=")[0]))]
    return shlex.join([*prog, *args, extra])


def checkpoint_dir(cfg: EngineConfig) -> Path:
    return Path(cfg.checkpoint.dir or Path(cfg.output.dir) / "checkpoint").expanduser()


def restart_fingerprint(cfg: EngineConfig) -> dict[str, Any]:
    """The job settings a checkpoint is only valid for, as plain JSON data: every key but OUTPUT_INDEPENDENT
    (`parallel.cfg_split` is in: two micro-batches round differently from one batch of two)."""
    data = json.loads(json.dumps(cfg.to_dict(), default=str))
    for dotted in OUTPUT_INDEPENDENT:
        section, _, key = dotted.rpartition(".")
        (data[section] if section else data).pop(key, None)
    return data


def _first_difference(old: Any, new: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if old == new else (prefix.rstrip("."), old, new)


@dataclass(frozen=True)
class CheckpointRef:
    """One verified checkpoint on disk: the state file, its metadata, and the newer ones found damaged."""

    iteration: int
    state_path: Path
    meta: dict[str, Any]
    skipped: tuple[str, ...] = ()  # "iter-000012: <problem>" for every newer checkpoint that failed checks


def latest_checkpoint(directory: Path) -> CheckpointRef | None:
    """The newest checkpoint whose metadata, size and SHA-256 all check out (None if there is none).

    Damaged newer checkpoints (a flipped byte, a truncated file, metadata without its state) are passed over
    and listed in `skipped`; `damaged_checkpoints` says why when none is valid."""
    skipped = []
    for meta_path, problem, meta in _candidates(directory):
        if problem is None:
            ref = CheckpointRef(int(meta["iteration"]), meta_path.with_suffix(".pt"), meta, tuple(skipped))
            return ref
        skipped.append(f"{meta_path.stem}: {problem}")
    return None


def damaged_checkpoints(directory: Path) -> list[str]:
    """Every checkpoint in `directory` with what is wrong with it (empty: none, or all valid)."""
    return [f"{path.stem}: {problem}" for path, problem, _ in _candidates(directory) if problem is not None]


def _candidates(directory: Path):
    """(metadata path, problem or None, metadata) for each checkpoint, newest first, verified lazily."""
    if not directory.is_dir():
        return
    for meta_path in sorted(directory.glob("iter-*.json"), reverse=True):
        try:
            meta = json.loads(meta_path.read_text())
            problem = _verify(meta_path.with_suffix(".pt"), meta)
        except (OSError, ValueError, TypeError, KeyError) as err:
            meta, problem = {}, f"unreadable metadata ({err})"
        yield meta_path, problem, meta


def _verify(state_path: Path, meta: dict[str, Any]) -> str | None:
    if meta.get("version") != STATE_VERSION:
        return f"state version {meta.get('version')!r}, this dualpar reads {STATE_VERSION}"
    if "sha256" not in meta:
        return "no checksum in its metadata (written by an older dualpar)"
    if not state_path.is_file():
        return f"{state_path.name} is missing"
    size = state_path.stat().st_size
    if size != meta["bytes"]:
        return f"{state_path.name} is truncated or extended: {size} of {meta['bytes']} bytes"
    if file_sha256(state_path) != meta["sha256"]:
        return f"{state_path.name} fails its SHA-256 check (its bytes changed on disk)"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def resume_from(cfg: EngineConfig) -> CheckpointRef | None:
    """The checkpoint this run continues from (None: a fresh start); ConfigError for an impossible resume."""
    if cfg.resume is False:
        return None
    directory = checkpoint_dir(cfg)
    ref = latest_checkpoint(directory)
    if ref is None:
        damaged = damaged_checkpoints(directory)
        if damaged:
            raise ConfigError(
                "resume",
                f"no checkpoint in {directory} is intact ({'; '.join(damaged)})",
                "start over with resume=false output.overwrite=true (this discards the unfinished run), or "
                "restore the checkpoint files",
            )
        if cfg.resume is True:
            raise ConfigError(
                "resume",
                f"is true but {directory} holds no checkpoint",
                "use resume=auto (resume only if a checkpoint exists), or point checkpoint.dir at the crashed "
                "run's checkpoint directory",
            )
        return None
    diff = _first_difference(ref.meta["fingerprint"], restart_fingerprint(cfg))
    if diff is not None:
        key, old, new = diff
        raise ConfigError(
            key or "resume",
            f"is {new!r} but the checkpoint in {directory} was rendered with {old!r}",
            f"resume with {key}={old!r}, or start over with resume=false output.overwrite=true",
        )
    return ref


def load_state(ref: CheckpointRef) -> dict[str, Any]:
    # weights_only=False: per-block solver objects are pickled; the file is our own output.
    return torch.load(ref.state_path, map_location="cpu", weights_only=False)


class _HashingWriter:
    """A file wrapper that hashes and counts what torch.save writes (one pass, no copy in memory)."""

    def __init__(self, f: Any):
        self.f = f
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.error: OSError | None = None  # torch's C++ writer reports a failed write as a bare position error

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.bytes += len(data)
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def save_state(directory: Path, iteration: int, state: dict[str, Any], meta: dict[str, Any], keep: int) -> int:
    """Write one checkpoint atomically (tmp, fsync, rename; metadata with size and SHA-256 last) and prune old
    ones; returns bytes. A failed write (a full disk) removes its temporary file and leaves the previous
    checkpoints as they were; a full disk is reported as ConfigError naming checkpoint.dir."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"iter-{iteration:06d}"
    tmp = directory / f".{stem}.pt.tmp"
    writer: _HashingWriter | None = None
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / f"{stem}.pt")
        full = {
            "version": STATE_VERSION,
            "iteration": iteration,
            "bytes": writer.bytes,
            "sha256": writer.digest.hexdigest(),
            "time": time.time(),
            **meta,
        }
        write_json_atomic(directory / f"{stem}.json", full)
        _fsync_dir(directory)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if (directory / f"{stem}.pt").exists() and not (directory / f"{stem}.json").exists():
            (directory / f"{stem}.pt").unlink()  # a state without metadata is never used; free its space
        (directory / f"{stem}.json.tmp").unlink(missing_ok=True)  # write_json_atomic's temporary file
        cause = writer.error if writer is not None and writer.error is not None else err
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(directory, stem, cause) from None
        raise
    stems = sorted(p.stem for p in directory.glob("iter-*.json"))
    for old in stems[: max(0, len(stems) - max(1, keep))]:
        (directory / f"{old}.json").unlink(missing_ok=True)  # metadata first: no half checkpoint looks valid
        (directory / f"{old}.pt").unlink(missing_ok=True)
    assert writer is not None
    return writer.bytes


def _disk_full(directory: Path, stem: str, err: OSError) -> ConfigError:
    usage = shutil.disk_usage(directory)
    previous = latest_checkpoint(directory)
    kept = f"the previous checkpoint {previous.state_path.stem} is intact" if previous else "no earlier checkpoint"
    return ConfigError(
        "checkpoint.dir",
        f"the filesystem of {directory} filled up while writing checkpoint {stem} ({os.strerror(err.errno)}; "
        f"{usage.free // 2**20} MiB free of {usage.total // 2**20} MiB); its partial file was removed and {kept}",
        "free space there or point checkpoint.dir at a larger filesystem, then rerun with resume=true",
    )


def clear_checkpoints(directory: Path, markers: bool) -> None:
    """Remove checkpoints, the STOP request and the status (and fault markers when `markers`)."""
    if not directory.is_dir():
        return
    patterns = ["iter-*.json", "iter-*.pt", ".iter-*.tmp", "iter-*.json.tmp", STOP_FILE, STATUS_FILE]
    if markers:
        patterns += ["killed-rank*.json", "stalled-rank*.json"]
    for pattern in patterns:
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
    if not any(directory.iterdir()):
        directory.rmdir()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FaultInjector:
    """`debug.kill_rank` / `debug.kill_at_iteration`: SIGKILL this rank once, like an OOM kill or a lost node;
    `debug.stall_rank` / `debug.stall_at_iteration`: hang this rank once, like a hung device or a frozen node.

    "Once" holds across restarts: a marker in the checkpoint dir (written just before dying or hanging, with the
    time, which the Ray launcher uses to measure detection latency) disarms the injection for later attempts.
    """

    def __init__(self, cfg: EngineConfig, rank: int):
        d = cfg.debug
        self.rank = rank
        self.iteration = d.kill_at_iteration
        self.armed = d.kill_rank == rank and d.kill_at_iteration is not None
        self.marker = checkpoint_dir(cfg) / f"killed-rank{rank}-iter{d.kill_at_iteration}.json"
        self.stall_at = d.stall_at_iteration if d.stall_rank == rank else None
        self.stall_marker = checkpoint_dir(cfg) / f"stalled-rank{rank}-iter{d.stall_at_iteration}.json"

    def __call__(self, iteration: int) -> None:
        if self.stall_at is not None and iteration == self.stall_at and not self.stall_marker.exists():
            self.stall_marker.parent.mkdir(parents=True, exist_ok=True)
            info = {"rank": self.rank, "iteration": iteration, "pid": os.getpid(), "time": time.time()}
            write_json_atomic(self.stall_marker, info)
            while True:  # a stuck peer: alive, holding its connections, never sending again
                time.sleep(3600)
        if not self.armed or iteration != self.iteration or self.marker.exists():
            return
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        info = {"rank": self.rank, "iteration": iteration, "pid": os.getpid(), "time": time.time()}
        write_json_atomic(self.marker, info)
        self.die()

    def die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def kill_markers(directory: Path) -> list[dict[str, Any]]:
    """The fault-injection markers written so far (rank, iteration, time of death)."""
    if not directory.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("killed-rank*.json"))]


class StopRequest:
    """A request to stop cleanly: SIGTERM/SIGINT (handled in the main thread) or a STOP file.

    Stage 0 checkpoints at the next iteration boundary and exits. Relays must keep serving until then (stage 0
    drains their passes first), so they only note the signal and exit after `grace_s` if still alive; stage 0's
    exit normally ends them first (PeerError). A second signal exits at once.
    """

    def __init__(self, directory: Path, stage0: bool, signals: bool = True, grace_s: float = 60.0):
        self.stop_file = directory / STOP_FILE
        self.stage0 = stage0
        self.signals = signals  # off under Ray: its workers own their signals (the driver uses the STOP file)
        self.grace_s = grace_s
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def requested(self) -> str | None:
        """Why to stop (a signal name or "STOP file"), or None. Stage 0 calls this once per iteration."""
        if self.signal_name is not None:
            return self.signal_name
        return "STOP file" if self.stage0 and self.stop_file.exists() else None

    def consume(self) -> None:
        self.stop_file.unlink(missing_ok=True)

    def peer_left(self, err: BaseException) -> BaseException:
        """What a relay raises when a peer left: after a stop signal stage 0 has checkpointed and gone, so the
        relay leaves quietly with the signal's exit code; otherwise the peer's failure stands."""
        if self.signal_name is None:
            return err
        return SystemExit(128 + int(signal.Signals[self.signal_name]))

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            os._exit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        if not self.stage0:
            timer = threading.Timer(self.grace_s, os._exit, args=(128 + signum,))
            timer.daemon = True
            timer.start()

    def __enter__(self) -> StopRequest:
        if self.signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Stage0Checkpointer:
    """Stage 0's iteration hooks: periodic and requested checkpoints, fault injection, status for the driver.

    `attach` names the objects whose state makes a checkpoint (block queue, output writer, measurements).
    """

    def __init__(self, cfg: EngineConfig, iterations: int, start: int, stop: StopRequest):
        self.dir = checkpoint_dir(cfg)
        self.every = cfg.checkpoint.every
        self.keep = cfg.checkpoint.keep
        self.iterations = iterations
        self.frames = cfg.frames
        self.start = start
        self.stop = stop
        self.inject = FaultInjector(cfg, 0)
        self.meta = {"fingerprint": restart_fingerprint(cfg)}
        # totals plus one entry per checkpoint: iteration, bytes, seconds draining the pipeline and saving
        self.stats: dict[str, Any] = {"every": self.every, "saved": 0, "bytes": 0, "save_s": 0.0, "drain_s": 0.0}
        self.stats["saves"] = []
        self._sources: tuple[Any, Any, Any] | None = None
        self._status_at = 0.0
        self._boundary_t = 0.0

    def attach(self, queue: Any, writer: Any, result: Any) -> None:
        self._sources = (queue, writer, result)

    def on_iteration(self, iteration: int) -> None:
        self.inject(iteration)
        self._boundary_t = time.perf_counter()
        if time.monotonic() - self._status_at >= 1.0:
            self.write_status(iteration)

    def wants_snapshot(self, iteration: int) -> bool:
        periodic = self.every > 0 and iteration > self.start and iteration % self.every == 0
        return periodic or self.stop.requested() is not None

    def snapshot(self, iteration: int) -> None:
        """Save the state at this boundary (no pass in flight); stop afterwards if that was requested."""
        assert self._sources is not None, "attach() the queue, writer and result first"
        queue, writer, result = self._sources
        t0 = time.perf_counter()
        drain_s = t0 - self._boundary_t
        state = {
            "version": STATE_VERSION,
            "iteration": iteration,
            "queue": queue.state_dict(),
            "output": writer.state(),
            "result": dataclasses.asdict(result),
        }
        size = save_state(self.dir, iteration, state, self.meta, self.keep)
        save_s = time.perf_counter() - t0
        self.stats["saved"] += 1
        self.stats["bytes"] = size
        self.stats["save_s"] += save_s
        self.stats["drain_s"] += drain_s
        self.stats["saves"].append({"iteration": iteration, "bytes": size, "save_s": save_s, "drain_s": drain_s})
        reason = self.stop.requested()
        if reason is not None:
            self.stop.consume()
            self.write_status(iteration, state="stopped")
            raise Interrupted(iteration, reason, self.dir / f"iter-{iteration:06d}.pt")

    def write_status(self, iteration: int, state: str = "running") -> None:
        self._status_at = time.monotonic()
        writer = self._sources[1] if self._sources else None
        status = {
            "state": state,
            "iteration": iteration,
            "iterations": self.iterations,
            "frames_written": writer.frames_written if writer is not None else 0,
            "frames": self.frames,
            "time": time.time(),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / STATUS_FILE, status)

    def finish(self) -> None:
        """The job is complete: its checkpoints can never be resumed, so they go (fault markers stay)."""
        clear_checkpoints(self.dir, markers=False)
