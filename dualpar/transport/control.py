"""The control plane: liveness and abort for every rank, over the rendezvous store, the same on CPU and GPU.

Tensors travel on the data plane (`TorchP2PTransport`: NCCL or gloo), which cannot decide liveness: an NCCL
wait does not block the host, and a gloo wait that times out tears its connection down. So each rank of a
multi-stage job runs one watchdog thread that talks only to the store every launcher already provides:

- heartbeat: a counter per rank, advanced every `interval_s` while the rank's main thread makes progress (a
  message sent or received) or is inside `waiting()` (blocked on a peer, or loading: alive, whoever it waits
  for may not be). A main thread stuck anywhere else (a hung kernel, a deadlock, `debug.stall_rank`) stops it.
- watch: each rank notes, on its own clock, when every peer's counter last moved (no clock sync needed). A
  peer silent for `timeout_s` is reported by rank and the job is aborted.
- abort: one key in the store holding the reason. Every watchdog that sees it prints the reason and ends its
  process at once (`os._exit`), even when the main thread is stuck in a kernel or a wait. So a failure
  anywhere ends every rank within `timeout_s` plus two heartbeat intervals.

A rank that finishes sets its `done` key, so peers stop watching it while they finish.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import torch.distributed as dist

ABORT_KEY = "abort"


class ControlPlane:
    """Heartbeats, peer watch and abort of one rank (start it once the process group is up)."""

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        world_size: int,
        timeout_s: float,
        interval_s: float | None = None,
        exit_fn: Callable[[int], None] = os._exit,
    ):
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.interval_s = interval_s if interval_s is not None else min(1.0, timeout_s / 10)
        self.exit_fn = exit_fn  # tests pass a recorder; in a worker it ends the process
        self._progress = 0  # bumped by the main thread
        self._beaten_at = -1  # progress value at the last heartbeat
        self._waiting = 0  # > 0 while the main thread is blocked on a peer (or loading)
        self._posted_abort = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"dualpar-control-{rank}", daemon=True)
        now = time.monotonic()
        self._peers = {p: (-1, now) for p in range(world_size) if p != rank}  # last count, when it moved

    # ---- main thread ----------------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        self.store.add(self._beat_key(self.rank), 1)
        self._thread.start()
        return self

    def progress(self) -> None:
        """The main thread did something (a message went out or came in)."""
        self._progress += 1

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """The main thread is blocked on a peer (or loading): alive, so the heartbeat goes on."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
            self._progress += 1

    def abort(self, reason: str) -> None:
        """Tell every rank to stop now (this rank's own failure, already being raised by its main thread)."""
        self._posted_abort = True
        with suppress(RuntimeError):  # the store is gone with its host: the peers' watchdogs notice that
            self.store.set(ABORT_KEY, f"rank {self.rank}: {reason}")

    def close(self, done: bool) -> None:
        """Stop the watchdog; `done`: this rank finished its part (peers stop watching it)."""
        self._stop.set()  # first: once a finished peer hosting the store leaves, store errors mean nothing
        if done:
            with suppress(RuntimeError):
                self.store.set(self._done_key(self.rank), "1")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 * self.interval_s + 1)

    # ---- watchdog thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                reason = self._tick()
            except RuntimeError as err:  # the store's host (rank 0 or the launcher's agent) went away
                reason = f"rank {self.rank}: lost the rendezvous store ({err}); a peer or the launcher died"
            if reason is not None and not self._stop.is_set():
                self._die(reason)
                return

    def _tick(self) -> str | None:
        """One heartbeat and watch round; the reason to stop, if any."""
        if not self._posted_abort and self.store.check([ABORT_KEY]):
            return f"rank {self.rank}: stopping, {self.store.get(ABORT_KEY).decode()}"
        if self._waiting > 0 or self._progress != self._beaten_at:
            self._beaten_at = self._progress
            self.store.add(self._beat_key(self.rank), 1)
        now = time.monotonic()
        for peer, (count, moved_at) in list(self._peers.items()):
            current = self.store.add(self._beat_key(peer), 0)
            if current != count:
                self._peers[peer] = (current, now)
            elif now - moved_at > self.timeout_s:
                if self.store.check([self._done_key(peer)]):
                    del self._peers[peer]
                    continue
                reason = (
                    f"rank {self.rank}: rank {peer} stalled: no heartbeat for {now - moved_at:.1f} s "
                    f"(parallel.timeout_s={self.timeout_s:g}); aborting every rank"
                )
                self.abort(reason.split(": ", 1)[1])
                return reason
        return None

    def _die(self, reason: str) -> None:
        print(f"dualpar: {reason}", file=sys.stderr, flush=True)
        self.exit_fn(1)

    def _beat_key(self, rank: int) -> str:
        return f"heartbeat/{rank}"

    def _done_key(self, rank: int) -> str:
        return f"done/{rank}"
