"""Per-rank spans of compute, send, receive and wait, for busy fractions and Chrome traces."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path


class Timeline:
    """Records (kind, item, t0, t1) spans on one rank; wall-clock seconds so ranks can be merged."""

    def __init__(self, rank: int, enabled: bool = True):
        self.rank = rank
        self.enabled = enabled
        self.spans: list[tuple[str, int, float, float]] = []
        self.start = time.time()

    @contextmanager
    def span(self, kind: str, item: int = -1):
        t0 = time.time()
        try:
            yield
        finally:
            if self.enabled:
                self.spans.append((kind, item, t0, time.time()))

    def busy_fraction(self, kinds: tuple[str, ...] = ("compute",)) -> float:
        if not self.spans:
            return 0.0
        t0 = min(s[2] for s in self.spans)
        t1 = max(s[3] for s in self.spans)
        busy = sum(s[3] - s[2] for s in self.spans if s[0] in kinds)
        return busy / (t1 - t0) if t1 > t0 else 0.0

    def to_dict(self, layers: range) -> dict:
        return {
            "stage": self.rank,
            "layers": [layers.start, layers.stop],
            "busy_fraction": self.busy_fraction(),
            "spans": [{"kind": k, "item": i, "t0": a, "t1": b} for k, i, a, b in self.spans],
        }


def write_chrome_trace(stages: list[dict], path: Path) -> None:
    """Merge every rank's spans into one Chrome trace (chrome://tracing, Perfetto)."""
    t0 = min((s["t0"] for st in stages for s in st["spans"]), default=0.0)
    events = []
    for st in stages:
        for s in st["spans"]:
            events.append(
                {
                    "name": s["kind"],
                    "ph": "X",
                    "pid": 0,
                    "tid": st["stage"],
                    "ts": (s["t0"] - t0) * 1e6,
                    "dur": (s["t1"] - s["t0"]) * 1e6,
                    "args": {"item": s["item"]},
                }
            )
        events.append(
            {
                "name": "thread_name",
                "ph": "M",
                "pid": 0,
                "tid": st["stage"],
                "args": {"name": f"stage {st['stage']} layers {st['layers']}"},
            }
        )
    path.write_text(json.dumps({"traceEvents": events}))
