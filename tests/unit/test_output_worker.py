"""The output worker (dualpar.output_worker): ordered, exactly-once hand-over with back-pressure, failures raised
on the pipeline thread without a hang, and renders bit-identical to inline output, resumed or not.

The unit tests drive the worker with fake writers gated by events (no timing assumptions); the render tests use
the tiny preset with a few frames and steps.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from dualpar.checkpoint import FaultInjector
from dualpar.output import OutputWriter
from dualpar.output_worker import OutputWorker
from dualpar.sinks.probe import read_frames
from dualpar.testing.crash import SimulatedCrash
from dualpar.testing.jobs import load_latents, render

LATENTS = (torch.zeros(1),)


class GatedWriter:
    """Writes a block only when the test releases it; records the order and the outstanding count seen."""

    def __init__(self, fail_at: int | None = None):
        self.gate = threading.Semaphore(0)
        self.written: list[int] = []
        self.fail_at = fail_at
        self.worker: OutputWorker | None = None
        self.outstanding_seen: list[int] = []
        self.entered = threading.Event()  # a block is in hand

    def write_block(self, block: int, latents) -> int:
        self.entered.set()
        if self.worker is not None:
            self.outstanding_seen.append(self.worker.outstanding)
        assert self.gate.acquire(timeout=30), "the test never released this block"
        if block == self.fail_at:
            raise OSError(f"disk gone while writing block {block}")
        self.written.append(block)
        return 4


def _submit_in_background(worker: OutputWorker, block: int) -> tuple[threading.Thread, list]:
    errors: list[BaseException] = []

    def go() -> None:
        try:
            worker.submit(block, LATENTS)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bound", [1, 3])
def test_back_pressure_keeps_at_most_bound_blocks_outstanding(bound):
    writer = GatedWriter()
    with OutputWorker(writer, "thread", bound=bound) as worker:
        writer.worker = worker
        for block in range(bound):  # these return at once: the worker has room
            worker.submit(block, LATENTS)
        assert worker.outstanding == bound
        thread, errors = _submit_in_background(worker, bound)
        thread.join(timeout=0.3)
        assert thread.is_alive(), "a full queue makes the pipeline wait"
        assert worker.outstanding == bound
        writer.gate.release()  # one block written: the waiting submit goes through
        thread.join(timeout=30)
        assert not thread.is_alive() and not errors
        for block in range(bound + 1, 12):
            writer.gate.release()
            worker.submit(block, LATENTS)
        for _ in range(bound):
            writer.gate.release()
        written = worker.drain()
    assert writer.written == list(range(12)), "every block once, in order"
    assert [w.block for w in written] == list(range(12)) and all(w.frames == 4 for w in written)
    assert worker.max_outstanding == bound and max(writer.outstanding_seen) <= bound
    assert worker.outstanding == 0


@pytest.mark.timeout(60)
def test_a_failing_write_is_raised_on_the_pipeline_thread_and_stops_the_worker():
    writer = GatedWriter(fail_at=2)
    worker = OutputWorker(writer, "thread", bound=2)
    worker.submit(0, LATENTS)
    worker.submit(1, LATENTS)
    thread, errors = _submit_in_background(worker, 2)  # waits: two blocks outstanding
    for _ in range(3):
        writer.gate.release()
    thread.join(timeout=30)
    assert not thread.is_alive() and not errors
    thread, errors = _submit_in_background(worker, 3)  # blocks 2 fails while 3 may wait for room: no hang
    thread.join(timeout=30)
    assert not thread.is_alive()
    with pytest.raises(OSError, match="disk gone while writing block 2") as raised:
        worker.drain()
    assert "output worker while writing block 2" in "".join(raised.value.__notes__)
    with pytest.raises(OSError):
        worker.poll()
    worker.abort()
    assert writer.written == [0, 1], "nothing after the failed block is written"
    assert worker._thread is not None and not worker._thread.is_alive()


@pytest.mark.timeout(60)
def test_abort_drops_pending_blocks_and_inline_writes_in_submit():
    writer = GatedWriter()
    with pytest.raises(SimulatedCrash), OutputWorker(writer, "thread", bound=3) as worker:
        for block in range(3):
            worker.submit(block, LATENTS)
        assert writer.entered.wait(timeout=30)  # block 0 is in hand: it finishes, blocks 1 and 2 are dropped
        threading.Timer(0.2, writer.gate.release).start()
        raise SimulatedCrash("pipeline failed")
    assert writer.written == [0] and not worker._thread.is_alive()
    inline = GatedWriter()
    with OutputWorker(inline, "inline") as worker:
        inline.gate.release()
        worker.submit(0, LATENTS)
        assert inline.written == [0] and [w.block for w in worker.poll()] == [0]
    with pytest.raises(ValueError, match="output.worker"):
        OutputWorker(inline, "process")


# ---- renders -----------------------------------------------------------------------------------------------
BASE = ["frames=49", "schedule.steps=3", "output.latents=true", "parallel.threads=1", "parallel.timeout_s=60"]


@pytest.fixture(scope="module")
def inline_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("inline")
    report = render(out, [*BASE, "output.worker=inline"])
    phases = report["phases"]  # inline: every decode and write happens inside the pipeline thread's wait
    assert phases["decode_s"] > 0 and phases["output_wait_s"] >= phases["decode_s"]
    return out


def assert_same_outputs(got, ref) -> None:
    assert torch.equal(load_latents(got), load_latents(ref))
    frames, expected = read_frames(got / "video.mp4"), read_frames(ref / "video.mp4")
    assert len(frames) == 49 and frames.shape == expected.shape and (frames == expected).all()
    assert (got / "preview.png").read_bytes() == (ref / "preview.png").read_bytes()


@pytest.mark.timeout(300)
def test_threaded_output_equals_inline_on_one_and_two_stages(tmp_path, inline_reference):
    one = render(tmp_path / "one", [*BASE, "output.worker=thread", "output.queue_blocks=1"])
    assert one["plan"]["output_worker"] == "thread" and one["frames_written"] == 49
    assert_same_outputs(tmp_path / "one", inline_reference)
    two = render(tmp_path / "two", [*BASE, "launcher=spawn", "parallel.stages=2"])
    assert two["plan"]["stages"] == 2 and two["frames_written"] == 49
    assert_same_outputs(tmp_path / "two", inline_reference)


@pytest.mark.timeout(120)
def test_a_failing_sink_fails_the_render_with_its_error(tmp_path, monkeypatch):
    real = OutputWriter.write_block

    def failing(self, block, latents):
        if block == 2:
            raise OSError("sink broke on block 2")
        return real(self, block, latents)

    monkeypatch.setattr(OutputWriter, "write_block", failing)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="sink broke on block 2"):
        render(tmp_path / "fail", [*BASE, "output.worker=thread"])
    assert time.monotonic() - t0 < 100, "the failure ends the render (no hang)"


@pytest.mark.timeout(300)
def test_resume_after_a_crash_with_output_pending_equals_an_uninterrupted_run(tmp_path, monkeypatch, inline_reference):
    real_write, real_init = OutputWriter.write_block, OutputWorker.__init__
    workers: list[OutputWorker] = []
    pending_at_crash: list[int] = []

    def slow_write(self, block, latents):
        time.sleep(0.2)  # slower than the tiny model's passes: blocks wait at the worker
        return real_write(self, block, latents)

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        workers.append(self)

    def die(self):
        pending_at_crash.append(workers[-1].outstanding)
        raise SimulatedCrash(f"rank {self.rank} at iteration {self.iteration}")

    monkeypatch.setattr(OutputWriter, "write_block", slow_write)
    monkeypatch.setattr(OutputWorker, "__init__", init)
    monkeypatch.setattr(FaultInjector, "die", die)
    out = tmp_path / "crashed"
    kill = ["checkpoint.every=3", "debug.kill_rank=0", "debug.kill_at_iteration=7", "output.queue_blocks=3"]
    with pytest.raises(SimulatedCrash):
        render(out, [*BASE, *kill])
    assert pending_at_crash and pending_at_crash[0] > 0, "the crash left blocks at the output worker"
    assert not workers[-1]._thread.is_alive(), "the crash stopped the worker"
    monkeypatch.undo()
    report = render(out, [*BASE, *kill, "resume=true"])
    assert report["restart"]["resumed_from_iteration"] == 6
    assert report["frames_written"] == 49
    assert_same_outputs(out, inline_reference)


def test_config_refuses_unknown_worker_and_empty_queue(tmp_path):
    from dualpar.cli import prepare
    from dualpar.errors import ConfigError
    from dualpar.testing.jobs import compose

    for bad, key in (("output.worker=process", "output.worker"), ("output.queue_blocks=0", "output.queue_blocks")):
        with pytest.raises(ConfigError, match=key):
            prepare(compose([f"output.dir={tmp_path}", bad]))
