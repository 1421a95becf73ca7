"""A crash in the middle of an in-process render, for resume tests without killing the test process."""

from __future__ import annotations

from pathlib import Path

from dualpar.checkpoint import FaultInjector
from dualpar.testing.jobs import render


class SimulatedCrash(BaseException):
    """Stands in for SIGKILL inside the test process (a BaseException: no handler in the engine catches it)."""


def crash_in_process(monkeypatch, out: Path, overrides: list[str]) -> None:
    """Render with `overrides` (which set debug.kill_rank=0 and debug.kill_at_iteration) until the fault
    injector fires, as a SimulatedCrash instead of SIGKILL; raises AssertionError if it never fires."""
    def die(self):
        raise SimulatedCrash(f"rank {self.rank} at iteration {self.iteration}")

    monkeypatch.setattr(FaultInjector, "die", die)
    try:
        render(out, overrides)
    except SimulatedCrash:
        return
    finally:
        monkeypatch.undo()
    raise AssertionError(f"the render in {out} finished without the injected crash")
