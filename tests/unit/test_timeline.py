"""Timeline spans: GPU time from events (not wall time around asynchronous launches), bounded summaries,
streamed trace parts merged into one Chrome trace."""

from __future__ import annotations

import json

import pytest

from dualpar.timeline import EventClock, SpanSummary, Timeline, WallClock, merge_trace_parts, trace_part


class FakeGPU:
    """A device whose queued work runs later: `launch(s)` returns at once on the host, the work takes `s`
    seconds of device time. Events complete when the device has reached them."""

    def __init__(self) -> None:
        self.host = 1000.0  # host wall clock (seconds)
        self.queued = 1000.0  # device time at which the queue drains
        self.done = 1000.0  # device time reached so far

    def launch(self, seconds: float) -> None:
        self.host += 1e-5  # a launch costs the host next to nothing
        self.queued = max(self.queued, self.host) + seconds

    def run_until(self, t: float) -> None:
        self.done = max(self.done, min(t, self.queued))


class FakeEvent:
    def __init__(self, gpu: FakeGPU) -> None:
        self.gpu = gpu
        self.at: float | None = None

    def record(self) -> None:
        self.at = max(self.gpu.queued, self.gpu.host)  # after all work queued so far

    def query(self) -> bool:
        return self.gpu.done >= self.at

    def synchronize(self) -> None:
        self.gpu.run_until(self.at)
        self.gpu.host = max(self.gpu.host, self.at)

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.query() and end.query(), "elapsed_time on an event that has not completed"
        return (end.at - self.at) * 1e3


def test_event_spans_measure_device_work_not_launches() -> None:
    gpu = FakeGPU()
    clock = EventClock(lambda: FakeEvent(gpu), wall=lambda: gpu.host)
    tl = Timeline(0, clock=clock)
    for item, seconds in enumerate((0.5, 0.25, 1.0)):
        with tl.span("compute", item):
            gpu.launch(seconds)
    assert tl.summary.kinds == {}  # nothing completed yet: no span is read before its events complete
    gpu.run_until(gpu.queued)
    assert tl.busy_fraction() == pytest.approx(1.0)
    assert tl.summary.kinds["compute"][0] == 3
    assert tl.summary.seconds("compute") == pytest.approx(1.75, abs=1e-3)  # wall time around the launches: 3e-5 s
    # device times map onto the host's wall clock through the anchor: the first span starts where the host was
    assert tl.summary.first == pytest.approx(1000.0, abs=1e-4)
    assert tl.summary.last == pytest.approx(1001.75, abs=1e-4)


def test_wall_clock_spans_and_nesting() -> None:
    now = [0.0]

    class Tick(WallClock):
        def mark(self) -> float:
            return now[0]

    tl = Timeline(3, clock=Tick(), tag=lambda kind, item: "right" if item % 2 else None)
    for item in range(4):
        with tl.span("compute", item):
            now[0] += 1.0
            with tl.span("embed", item):
                now[0] += 0.5
        now[0] += 0.5  # idle
    s = tl.summary
    assert s.kinds["compute"] == [2, 3.0] and s.kinds["compute/right"] == [2, 3.0]
    assert s.seconds("compute") == 6.0 and s.seconds("embed") == 2.0
    assert s.covered_s == 6.0  # nested embed spans are not counted twice
    assert tl.busy_fraction() == pytest.approx(6.0 / 7.5)
    d = tl.to_dict(range(2, 5))
    assert d["layers"] == [2, 5] and "spans" not in d and d["timeline"]["kinds"]["embed"] == {"n": 2, "s": 1.0}


def test_summaries_stay_bounded() -> None:
    tl = Timeline(0)
    for item in range(5000):
        with tl.span("compute", item):
            pass
    assert len(json.dumps(tl.to_dict(range(0, 1)))) < 400
    assert not hasattr(tl, "spans")


def test_trace_parts_stream_and_merge(tmp_path) -> None:
    for rank in range(2):
        tl = Timeline(rank, trace=trace_part(tmp_path, rank), name=f"stage {rank}")
        for item in range(3):
            with tl.span("compute", item), tl.span("head", item):
                pass
        tl.close()
    assert trace_part(tmp_path, 1).read_text().count("\n") == 1 + 6  # lane name + spans, one per line
    missing = merge_trace_parts(tmp_path, 3, tmp_path / "trace.json")
    assert missing == [2]
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == 12 and {e["tid"] for e in spans} == {0, 1}
    assert min(e["ts"] for e in spans) == 0.0
    assert {e["args"]["name"] for e in events if e["ph"] == "M"} == {"stage 0", "stage 1"}
    assert not (tmp_path / "trace.parts").exists()


def test_summary_busy_fraction_of_nothing() -> None:
    assert SpanSummary().busy_fraction() == 0.0
    assert SpanSummary().to_dict()["first"] is None
