"""Stage 0's output worker: decode, convert, encode and write finished blocks off the pipeline thread.

Why it exists: decoding a block with the VAE, converting it to uint8 and running x264 took over half of a CPU
render (docs/results/bench_av.json) and, done between passes, stalls every stage once per retired block. The
pipeline thread only hands each finished block over (`submit`); one worker does the output side meanwhile.

Why a thread (`output.worker=thread`, measured in docs/results/bench_output_worker.json "thread_vs_process"):
the work is torch kernels, numpy and PyAV's encoder, which release the GIL, so a thread overlaps with the
pipeline as well as a process would, without shipping latents to another process, and the decoder cache and
sink progress a checkpoint saves stay in this process. On a GPU it runs on its own CUDA stream, which waits on
an event recorded where the block finished (no host sync on the pipeline thread).

Contract: blocks are written exactly once, in submission order, by one worker. `submit` returns at once
unless `bound` blocks are already outstanding (submitted and not yet written): then the pipeline waits
(back-pressure). A failure in the worker stops it (nothing after the failed block is written) and is raised
on the pipeline thread, with a note naming the block, at its next `submit`, `poll` or `drain`; the engine
polls once per pass. `drain` waits until everything submitted is written: a checkpoint drains first, so the
writer state it saves covers every block retired before its boundary. Leaving the `with` block with an
exception (a crash, a requested stop) drops what is pending and waits for the block in hand; leaving it
normally drains. `output.worker=inline` does the same work inside `submit`, the behaviour before the worker,
kept as the measured baseline and for debugging.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dualpar.config import OUTPUT_WORKERS

ABORT_JOIN_S = 60.0  # how long an aborting pipeline waits for the block in hand before leaving it behind


class BlockWriter(Protocol):
    """What the worker drives: dualpar.output.OutputWriter (tests substitute slow or failing fakes)."""

    def write_block(self, block: int, latents: tuple[torch.Tensor, ...]) -> int: ...


@dataclass(frozen=True)
class Written:
    """One block the worker wrote: its video frames and the wall-clock start and end of the work."""

    block: int
    frames: int
    t0: float
    t1: float

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


class OutputWorker:
    """A bounded, ordered hand-over of finished blocks to `writer`, on a thread of its own or inline."""

    def __init__(self, writer: BlockWriter, mode: str = "thread", bound: int = 2, device: torch.device | None = None):
        if mode not in OUTPUT_WORKERS:
            raise ValueError(f"output.worker is {mode!r}; use one of {', '.join(OUTPUT_WORKERS)}")
        if bound < 1:
            raise ValueError(f"output.queue_blocks is {bound}; use at least 1")
        self.writer = writer
        self.mode = mode
        self.bound = bound
        self.wait_s = 0.0  # pipeline-thread seconds spent on output: back-pressure and drains (inline: the work)
        self.max_outstanding = 0  # the most blocks ever submitted and not yet written
        self._cond = threading.Condition()
        self._pending: deque[tuple[int, tuple[torch.Tensor, ...], Any]] = deque()
        self._in_hand = 0
        self._done: list[Written] = []
        self._error: BaseException | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._stream = None
        if mode == "thread":
            if device is not None and device.type == "cuda":
                self._stream = torch.cuda.Stream(device)
            self._thread = threading.Thread(target=self._loop, name="dualpar-output", daemon=True)
            self._thread.start()

    # ---- pipeline thread ------------------------------------------------------------------------------
    def submit(self, block: int, latents: tuple[torch.Tensor, ...]) -> None:
        """Hand over a finished block (its tensors are never modified afterwards); waits while `bound` blocks
        are outstanding; raises the worker's failure if it has failed."""
        t0 = time.perf_counter()
        if self._thread is None:
            self._done.append(self._write(block, latents))
            self.wait_s += time.perf_counter() - t0
            return
        event = None
        if self._stream is not None:  # the block's last step was queued on the pipeline's stream
            event = torch.cuda.Event()
            event.record()
        with self._cond:
            while self._outstanding() >= self.bound and self._error is None:
                self._cond.wait()
            self._raise_if_failed()
            self._pending.append((block, latents, event))
            self.max_outstanding = max(self.max_outstanding, self._outstanding())
            self._cond.notify_all()
        self.wait_s += time.perf_counter() - t0

    def poll(self) -> list[Written]:
        """The blocks written since the last call, in order; raises the worker's failure if it has failed."""
        with self._cond:
            self._raise_if_failed()
            done, self._done = self._done, []
        return done

    def drain(self) -> list[Written]:
        """Wait until every submitted block is written; then `poll`."""
        t0 = time.perf_counter()
        with self._cond:
            while self._outstanding() and self._error is None:
                self._cond.wait()
        self.wait_s += time.perf_counter() - t0
        return self.poll()

    @property
    def outstanding(self) -> int:
        with self._cond:
            return self._outstanding()

    def close(self) -> None:
        """Drain, then stop the worker (blocks written but not polled stay for a last `poll`)."""
        self.drain()
        self._shutdown(timeout=None)

    def abort(self) -> None:
        """Drop what is pending and stop once the block in hand is done (the pipeline is failing already)."""
        with self._cond:
            self._pending.clear()
        self._shutdown(timeout=ABORT_JOIN_S)

    def __enter__(self) -> OutputWorker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ---- worker thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        stream = torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()
        with stream, torch.no_grad():  # grad mode and the current stream are per thread
            while True:
                with self._cond:
                    while not self._pending and not self._stop:
                        self._cond.wait()
                    if not self._pending:
                        return
                    block, latents, event = self._pending.popleft()
                    self._in_hand = 1
                try:
                    if event is not None:
                        self._stream.wait_event(event)
                        for t in latents:  # the pipeline's allocator must not reuse them while this stream reads
                            t.record_stream(self._stream)
                    written = self._write(block, latents)
                except BaseException as err:  # noqa: BLE001 - every failure goes to the pipeline thread
                    err.add_note(f"(raised by dualpar's output worker while writing block {block})")
                    with self._cond:
                        self._error = err
                        self._pending.clear()
                        self._in_hand = 0
                        self._cond.notify_all()
                    return
                with self._cond:
                    self._in_hand = 0
                    self._done.append(written)
                    self._cond.notify_all()

    # ---- both -------------------------------------------------------------------------------------------
    def _write(self, block: int, latents: tuple[torch.Tensor, ...]) -> Written:
        t0 = time.time()
        frames = self.writer.write_block(block, latents)
        return Written(block, frames, t0, time.time())

    def _outstanding(self) -> int:
        return len(self._pending) + self._in_hand

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _shutdown(self, timeout: float | None) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
