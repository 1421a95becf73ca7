"""A one-line terminal progress display for long renders: blocks, frames, frames/s and ETA."""

from __future__ import annotations

import sys
import time


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Prints `blocks done/total | frames | frames/s | ETA` to stderr as blocks finish."""

    def __init__(self, total_blocks: int, total_frames: int, enabled: bool = True, stream=None):
        self.total_blocks = total_blocks
        self.total_frames = total_frames
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.blocks = 0
        self.frames = 0
        self.start_blocks = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def resume_from(self, blocks: int, frames: int) -> None:
        self.blocks, self.frames, self.start_blocks = blocks, frames, blocks

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        done = self.blocks - self.start_blocks
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total_blocks - self.blocks) if done else float("nan")
        eta_s = _fmt_eta(eta) if done else "?"
        return (
            f"[dualpar] blocks {self.blocks}/{self.total_blocks} | frames {self.frames}/{self.total_frames} "
            f"| {fps:.2f} frames/s | ETA {eta_s}"
        )

    def block_done(self, frames: int) -> None:
        self.blocks += 1
        self.frames += frames
        if self.enabled:
            end = "\r" if self.tty and self.blocks < self.total_blocks else "\n"
            print(self.line(), end=end, file=self.stream, flush=True)
