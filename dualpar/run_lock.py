"""One render per output directory: an exclusive lock held by the launching process for the whole run.

Why it exists: two renders into one `output.dir` (or one checkpoint dir) silently mix their segments and
checkpoints, and the last one to finish writes a report that describes frames it did not render. The process
that launches a job (the CLI process for local and spawn, rank 0 under torchrun, the Ray driver) takes an
`fcntl.flock` on `<dir>/.dualpar.lock` before anything in the directory is written or deleted and keeps it
until the job ends; a second run finds the lock held and exits 2 naming the holder (pid, host, start time).

The kernel drops a flock when its holder dies, so a crashed run never blocks the next one. Its lock file stays
behind, though (a clean exit removes it), and that is how a stale lock is recognised and reported. Where the
filesystem refuses flock (some network filesystems), the recorded pid decides: alive on this host, or on
another host, means held.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualpar.errors import ConfigError

LOCK_NAME = ".dualpar.lock"
_HELD: set[Path] = set()  # lock files this process holds (a restart's validation must not see itself)


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, as recorded in the lock file."""

    pid: int
    host: str
    started: float
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when} ({self.command})"

    def alive_here(self) -> bool | None:
        """Whether the holder still runs (None: it ran on another host, which cannot be checked from here)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text())
        return Holder(int(data["pid"]), str(data["host"]), float(data["started"]), str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _held_error(path: Path, key: str, holder: Holder | None) -> ConfigError:
    who = holder.describe() if holder is not None else "another process"
    return ConfigError(
        key,
        f"{path.parent} is in use by another dualpar run ({who}); two runs in one directory mix their outputs",
        "wait for that run to finish or stop it (kill -TERM <pid> checkpoints it), or choose another "
        f"{key}. If no such run exists, delete {path}",
    )


class DirLock:
    """An exclusive, non-blocking lock on one directory (`acquire` raises ConfigError if it is taken)."""

    def __init__(self, directory: Path, key: str):
        self.path = directory.expanduser().resolve() / LOCK_NAME
        self.key = key
        self.fd: int | None = None
        self.stale: Holder | None = None  # a dead run's record found when taking the lock

    def probe(self) -> None:
        """Raise the 'in use' ConfigError if another process holds the lock; leaves nothing behind."""
        if self.path in _HELD or not self.path.exists():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            if not _try_flock(fd, self.path):
                raise _held_error(self.path, self.key, read_holder(self.path))
        finally:
            os.close(fd)  # closing drops the probe's flock, if it got one

    def acquire(self) -> DirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_flock(fd, self.path):
                holder = read_holder(self.path)
                os.close(fd)
                raise _held_error(self.path, self.key, holder)
            try:  # the previous holder may have unlinked the file between our open and flock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        self.stale = read_holder(self.path)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv[:1] + sys.argv[1:])[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        _HELD.add(self.path)
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # unlink while holding: a waiter re-checks the inode (see acquire)
        _HELD.discard(self.path)
        os.close(self.fd)
        self.fd = None


def _try_flock(fd: int, path: Path) -> bool:
    """True if this fd now holds the exclusive lock. Filesystems without flock fall back to the pid record."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    holder = read_holder(path)
    return holder is None or holder.pid == os.getpid() or holder.alive_here() is False


def lock_dirs(cfg: Any) -> list[tuple[Path, str]]:
    """The directories a job writes to, with their config keys: output.dir, and the checkpoint dir when it
    lies outside output.dir (inside it, the output lock covers it)."""
    from dualpar.checkpoint import checkpoint_dir

    out = Path(cfg.output.dir).expanduser().resolve()
    dirs = [(out, "output.dir")]
    ckpt = checkpoint_dir(cfg).resolve()
    if out not in ckpt.parents and ckpt != out:
        dirs.append((ckpt, "checkpoint.dir"))
    return dirs


def probe_run_lock(cfg: Any) -> None:
    """Validation: ConfigError if another run holds this job's output or checkpoint directory."""
    for directory, key in lock_dirs(cfg):
        DirLock(directory, key).probe()


@contextmanager
def run_lock(cfg: Any, emit: bool = True) -> Iterator[list[DirLock]]:
    """Hold the job's directory locks for the body (released on any exit, including errors)."""
    with ExitStack() as stack:
        locks = []
        for directory, key in lock_dirs(cfg):
            lock = DirLock(directory, key).acquire()
            stack.callback(lock.release)
            locks.append(lock)
            if emit and lock.stale is not None and lock.stale.pid != os.getpid():
                print(
                    f"dualpar: note: {key} {directory} was locked by a run that ended without releasing it "
                    f"({lock.stale.describe()}; it is no longer running). Taking it over; its unfinished "
                    "outputs are kept (resume=true continues them)",
                    file=sys.stderr,
                )
        yield locks
