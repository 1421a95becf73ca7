"""Per-rank spans of compute, send, receive and wait: bounded summaries for report.json, streamed Chrome traces.

Why it looks like this:
- On a GPU kernels run asynchronously, so wall time around a launch measures the launch, not the work. A span
  is bracketed by a `Clock`'s marks: wall time on the CPU, CUDA events on the current stream on a GPU (mapped
  to wall seconds through one anchor event synchronised at the start, so ranks still merge on one time axis).
  Event spans are resolved once their end event has completed, never by stalling the stream.
- A run can have millions of spans; keeping them would make memory and report.json grow with the video. The
  timeline keeps only `SpanSummary` totals (count and seconds per kind, busy fraction) and, when a trace is
  asked for, appends each span as one Chrome trace event line to this rank's part file. Stage 0 merges the
  parts into trace.json at the end (`merge_trace_parts`), streaming line by line.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

TRACE_PARTS = "trace.parts"
SIDE_LANE = 1000  # trace lane of a rank's output worker: rank + SIDE_LANE
MAX_PENDING = 4096  # unresolved event spans before the oldest is waited for (bounds memory on a stalled GPU)


class Clock(Protocol):
    """Marks the start and end of spans; `seconds` maps a completed mark to wall-clock seconds."""

    def mark(self) -> Any: ...

    def ready(self, mark: Any) -> bool: ...

    def wait(self, mark: Any) -> None: ...

    def seconds(self, mark: Any) -> float: ...


class WallClock:
    """CPU work is synchronous: the wall time around it is its duration."""

    def mark(self) -> float:
        return time.time()

    def ready(self, mark: float) -> bool:
        return True

    def wait(self, mark: float) -> None:
        return None

    def seconds(self, mark: float) -> float:
        return mark


class EventClock:
    """GPU work is asynchronous: a mark is an event recorded on the current stream, timed when it completes.

    `new_event` makes an event with `record()`, `query()`, `synchronize()` and `elapsed_time(other)` (ms), as
    `torch.cuda.Event(enable_timing=True)` does; `wall` is the host clock the anchor is read from. Both are
    injectable so the logic is tested on a CPU with fake events."""

    def __init__(self, new_event: Callable[[], Any], wall: Callable[[], float] = time.time):
        self._new = new_event
        self._anchor = self.mark()
        self._anchor.synchronize()
        self._anchor_wall = wall()

    @classmethod
    def cuda(cls) -> EventClock:
        import torch

        return cls(lambda: torch.cuda.Event(enable_timing=True))

    def mark(self) -> Any:
        event = self._new()
        event.record()
        return event

    def ready(self, mark: Any) -> bool:
        return bool(mark.query())

    def wait(self, mark: Any) -> None:
        mark.synchronize()

    def seconds(self, mark: Any) -> float:
        return self._anchor_wall + self._anchor.elapsed_time(mark) / 1e3


def clock_for(device: Any) -> Clock:
    """CUDA events on a CUDA device, wall time otherwise."""
    return EventClock.cuda() if getattr(device, "type", str(device)) == "cuda" else WallClock()


@dataclass
class SpanSummary:
    """Counts and seconds per span kind; `covered_s` counts time in any top-level span once.

    `tag(kind, item)` may split a kind by item (e.g. passes with right-context keys: `compute/right`), which the
    performance model's calibration needs without per-span lists."""

    tag: Callable[[str, int], str | None] | None = None
    kinds: dict[str, list[float]] = field(default_factory=dict)  # key -> [count, seconds]
    covered_s: float = 0.0
    first: float = float("inf")
    last: float = float("-inf")

    def add(self, kind: str, item: int, t0: float, t1: float, top: bool = True) -> None:
        sub = self.tag(kind, item) if self.tag is not None else None
        entry = self.kinds.setdefault(kind if sub is None else f"{kind}/{sub}", [0, 0.0])
        entry[0] += 1
        entry[1] += t1 - t0
        if top:
            self.covered_s += t1 - t0
        self.first, self.last = min(self.first, t0), max(self.last, t1)

    def seconds(self, kind: str) -> float:
        """Total seconds of `kind`, over all its tags."""
        return sum(v[1] for k, v in self.kinds.items() if k == kind or k.startswith(kind + "/"))

    def busy_fraction(self, kinds: tuple[str, ...] = ("compute",)) -> float:
        span = self.last - self.first
        return sum(self.seconds(k) for k in kinds) / span if span > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "kinds": {k: {"n": int(n), "s": s} for k, (n, s) in sorted(self.kinds.items())},
            "covered_s": self.covered_s,
            "first": self.first if self.kinds else None,
            "last": self.last if self.kinds else None,
        }


def summary_from_spans(spans: Iterable[Mapping], tag: Callable[[str, int], str | None] | None = None) -> dict:
    """`SpanSummary.to_dict()` of a list of {kind, item, t0, t1} (simulated reports, older reports). Spans
    nested in another are counted once in `covered_s`."""
    summary = SpanSummary(tag)
    rows = sorted((float(s["t0"]), float(s["t1"]), str(s["kind"]), int(s.get("item", -1))) for s in spans)
    end = float("-inf")
    for t0, t1, kind, item in rows:
        summary.add(kind, item, t0, t1, top=False)
        if t1 > end:
            summary.covered_s += t1 - max(t0, end)
            end = t1
    return summary.to_dict()


class Timeline:
    """One rank's spans: summarised in memory, optionally streamed to `trace` (one JSON event per line).

    `name` labels the rank's lane in the trace."""

    def __init__(
        self,
        rank: int,
        enabled: bool = True,
        clock: Clock | None = None,
        trace: Path | None = None,
        tag: Callable[[str, int], str | None] | None = None,
        name: str | None = None,
    ):
        self.rank = rank
        self.enabled = enabled
        self.clock = clock if clock is not None else WallClock()
        self.summary = SpanSummary(tag)
        self._depth = 0
        self._pending: deque[tuple[str, int, Any, Any, bool]] = deque()
        self._trace: IO[str] | None = None
        self._side_named = False
        if trace is not None and enabled:
            trace.parent.mkdir(parents=True, exist_ok=True)
            self._trace = open(trace, "w")  # noqa: SIM115 - held open while the run streams into it
            label = name or f"stage {rank}"
            self._write({"name": "thread_name", "ph": "M", "pid": 0, "tid": rank, "args": {"name": label}})

    @contextmanager
    def span(self, kind: str, item: int = -1):
        if not self.enabled:
            yield
            return
        top = self._depth == 0
        self._depth += 1
        start = self.clock.mark()
        try:
            yield
        finally:
            self._depth -= 1
            self._pending.append((kind, item, start, self.clock.mark(), top))
            self._resolve(wait=len(self._pending) > MAX_PENDING)

    def record(self, kind: str, item: int, t0: float, t1: float) -> None:
        """A span measured on another thread of this rank (the output worker), in wall-clock seconds: counted
        in its kind's totals but not in `covered_s` (it overlaps this rank's own spans); traced in its own lane."""
        if not self.enabled:
            return
        self.summary.add(kind, item, t0, t1, top=False)
        if self._trace is not None:
            tid = self.rank + SIDE_LANE
            if not self._side_named:
                self._side_named = True
                self._write({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": "output"}})
            event = {"name": kind, "ph": "X", "pid": 0, "tid": tid, "ts": t0 * 1e6, "dur": (t1 - t0) * 1e6}
            self._write(event | {"args": {"item": item}})

    def _resolve(self, wait: bool = False, everything: bool = False) -> None:
        """Record finished spans, oldest first; `wait` blocks for the oldest one, `everything` for all."""
        while self._pending:
            kind, item, start, end, top = self._pending[0]
            if not self.clock.ready(end):
                if not (wait or everything):
                    return
                self.clock.wait(end)
                wait = False
            self._pending.popleft()
            t0, t1 = self.clock.seconds(start), self.clock.seconds(end)
            self.summary.add(kind, item, t0, t1, top)
            if self._trace is not None:
                self._write(
                    {
                        "name": kind,
                        "ph": "X",
                        "pid": 0,
                        "tid": self.rank,
                        "ts": t0 * 1e6,
                        "dur": (t1 - t0) * 1e6,
                        "args": {"item": item},
                    }
                )

    def _write(self, event: dict) -> None:
        assert self._trace is not None
        self._trace.write(json.dumps(event) + "\n")

    def busy_fraction(self, kinds: tuple[str, ...] = ("compute",)) -> float:
        self._resolve(everything=True)
        return self.summary.busy_fraction(kinds)

    def close(self) -> None:
        """Resolve every span (waits for outstanding GPU work) and close the trace part."""
        self._resolve(everything=True)
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def to_dict(self, layers: range) -> dict:
        """Bounded: the summary, never the spans."""
        self.close()
        return {
            "stage": self.rank,
            "layers": [layers.start, layers.stop],
            "busy_fraction": self.summary.busy_fraction(),
            "timeline": self.summary.to_dict(),
        }


def trace_part(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / TRACE_PARTS / f"rank{rank}.jsonl"


def merge_trace_parts(out_dir: Path, ranks: int, path: Path) -> list[int]:
    """Stream every rank's part into one Chrome trace at `path` (times from the earliest span), then delete
    the parts. Returns the ranks whose part was not found (a rank on another node without a shared output
    directory)."""
    parts = [trace_part(out_dir, r) for r in range(ranks)]
    missing = [r for r, p in enumerate(parts) if not p.exists()]
    t0 = float("inf")
    for p in parts:
        if p.exists():
            with open(p) as f:
                for line in f:
                    ts = json.loads(line).get("ts")
                    if ts is not None:
                        t0 = min(t0, ts)
    t0 = 0.0 if t0 == float("inf") else t0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as out:
        out.write('{"traceEvents": [\n')
        first = True
        for p in parts:
            if not p.exists():
                continue
            with open(p) as f:
                for line in f:
                    event = json.loads(line)
                    if "ts" in event:
                        event["ts"] -= t0
                    out.write(("" if first else ",\n") + json.dumps(event))
                    first = False
        out.write("\n]}\n")
    tmp.replace(path)
    for p in parts:
        p.unlink(missing_ok=True)
    with suppress(OSError):  # another writer's files, or a part this rank could not see
        (Path(out_dir) / TRACE_PARTS).rmdir()
    return missing
