"""Render progress on stderr from the first pass: a bar on a terminal, plain lines otherwise.

Why passes and not blocks: a block leaves the queue only after all of its steps, so for the first part of a
run (the queue filling) no block finishes at all, and a rate or ETA built on finished blocks is silent, then
wildly wrong. Stage 0 reports every pass it applies (`pass_done`); the rate is measured over a recent window
of this run's own passes, from its first pass on (the first pass also carries start-up and the pipeline fill; a
resumed run's restored passes never count as instant work), and the ETA is the passes left at that rate.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Passes and frames done, a windowed rate and an ETA, printed as the render goes.

    The worker creates it (and restores blocks and frames of a resumed run with `resume_from`); the engine
    calls `start` with the plan's pass count and the passes already done, `pass_done` per applied pass and
    `block_done` per written block. Lines are throttled to one per `plain_every_s` (terminal: `tty_every_s`),
    the first pass and the end always printed.
    """

    def __init__(
        self,
        total_blocks: int,
        total_frames: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 30.0,
        plain_every_s: float = 10.0,
        tty_every_s: float = 0.25,
    ):
        self.total_blocks = total_blocks
        self.total_frames = total_frames
        self.total_passes = 0
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.clock = clock
        self.window_s = window_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = tty_every_s if self.tty else plain_every_s
        self.blocks = 0
        self.frames = 0
        self.passes = 0
        self.start_passes = 0
        self.t_start = clock()
        self._samples: deque[tuple[float, int]] = deque([(self.t_start, 0)])  # (time, passes) of this run
        self._last_print: float | None = None
        self._last_text = ""
        self._open_line = False

    # ---- what the worker and the engine call -------------------------------------------------------------
    def resume_from(self, blocks: int, frames: int) -> None:
        """Blocks and frames a resumed run had already written."""
        self.blocks, self.frames = blocks, frames

    def start(self, total_passes: int, done_passes: int = 0, iteration: int = 0) -> None:
        """The render starts (stage 0, before its first pass); `done_passes` were restored from a checkpoint."""
        self.total_passes = total_passes
        self.passes = self.start_passes = done_passes
        self.t_start = self.clock()
        self._samples = deque([(self.t_start, done_passes)])
        if done_passes and self.enabled:
            self._emit(
                f"[dualpar] resumed at iteration {iteration}: {done_passes}/{total_passes} passes, "
                f"{self.frames}/{self.total_frames} frames, {self.blocks}/{self.total_blocks} blocks already done",
                final=True,
            )

    def pass_done(self, n: int = 1) -> None:
        self.passes += n
        now = self.clock()
        first = self.passes - self.start_passes == n
        if first:  # the first pass also carries start-up and the pipeline fill: the rate is measured from it
            self._samples = deque([(now, self.passes)])
        else:
            self._samples.append((now, self.passes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        self._maybe_print(now, force=first or self.passes >= self.total_passes > 0)

    def block_done(self, frames: int) -> None:
        self.blocks += 1
        self.frames += frames
        self._maybe_print(self.clock(), force=self.blocks >= self.total_blocks)

    # ---- numbers -------------------------------------------------------------------------------------------
    def rate(self) -> float | None:
        """Passes per second over the recent window of this run, measured from its first pass (None before the
        second: the first one's time includes start-up and filling the pipeline, which the passes left do not)."""
        (t0, p0), (t1, p1) = self._samples[0], self._samples[-1]
        if p1 <= p0 or t1 <= t0:
            return None
        return (p1 - p0) / (t1 - t0)

    def eta_s(self) -> float | None:
        rate = self.rate()
        if rate is None:
            return None
        return max(0, self.total_passes - self.passes) / rate

    def line(self) -> str:
        total = max(1, self.total_passes)
        rate = self.rate()
        eta = self.eta_s()
        pct = 100.0 * self.passes / total
        head = "[dualpar] "
        if self.tty:
            filled = int(BAR_WIDTH * self.passes / total)
            head += "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
        return (
            f"{head}passes {self.passes}/{self.total_passes} ({pct:.0f}%) | frames {self.frames}/{self.total_frames} "
            f"| {'?' if rate is None else f'{rate:.2f}'} passes/s | ETA {'?' if eta is None else format_eta(eta)}"
        )

    # ---- output --------------------------------------------------------------------------------------------
    def _maybe_print(self, now: float, force: bool) -> None:
        if not self.enabled:
            return
        if force or self._last_print is None or now - self._last_print >= self.every_s:
            text = self.line()
            if text == self._last_text:
                return
            done = self.passes >= self.total_passes > 0 and self.blocks >= self.total_blocks
            self._emit(text, final=done)
            self._last_print, self._last_text = now, text

    def _emit(self, text: str, final: bool) -> None:
        if self.tty:
            end = "\n" if final else ""
            print("\r" + text.ljust(100), end=end, file=self.stream, flush=True)
            self._open_line = not final
        else:
            print(text, file=self.stream, flush=True)
