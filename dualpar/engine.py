"""The per-rank loop: the only code that moves blocks through the stages.

Stage 0 walks the plan in its global order: it retires finished blocks (hands them to the output worker,
which decodes and writes them beside the pipeline), admits new ones, assembles each pass's window once the
passes it depends on have come back, runs its layers and sends the hidden states on. Other stages
receive, run their layers and send on; the last one returns the guided output of the block's own frames to
stage 0. With one stage there is no transport at all.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dualpar.block_queue import BlockQueue
from dualpar.job import JobLayout
from dualpar.output_worker import OutputWorker, Written
from dualpar.progress import Progress
from dualpar.runner import StageRunner
from dualpar.schedule.blockwise import WorkItem
from dualpar.timeline import Timeline
from dualpar.transport.base import Transport


@dataclass
class IterationHooks:
    """What the engine calls at iteration boundaries: fault injection, checkpoints, progress.

    `on_iteration(i)` runs on every rank as it starts iteration i. On stage 0, when `wants_snapshot(i)` is
    true, the engine first drains every pass in flight (so all state sits on stage 0, docs/algorithm.md "Restart")
    and then calls `snapshot(i)`; other iterations keep the pipeline full.
    """

    on_iteration: Callable[[int], None] | None = None
    wants_snapshot: Callable[[int], bool] | None = None
    snapshot: Callable[[int], None] | None = None


@dataclass
class Stage0Result:
    """What stage 0 measured while rendering."""

    block_seconds: list[float] = field(default_factory=list)  # decode + write of each block (output worker)
    decode_s: float = 0.0  # decode + write seconds, wherever they ran
    denoise_s: float = 0.0
    frames: int = 0
    output_wait_s: float = 0.0  # seconds the pipeline thread spent on output (inline: all of decode_s)


class PipelineEngine:
    """Runs one rank's part of a job over the shared plan."""

    def __init__(
        self,
        job: JobLayout,
        runner: StageRunner,
        rank: int,
        stages: int,
        transport: Transport | None,
        timeline: Timeline,
    ):
        self.job = job
        self.runner = runner
        runner.timeline = timeline  # nested spans (conditions, embed, head) for the performance model
        self.rank = rank
        self.stages = stages
        self.transport = transport
        self.timeline = timeline
        self.hooks = IterationHooks()
        self.start_iteration = 0  # resume: every rank starts at the same iteration boundary
        self.progress: Progress | None = None  # stage 0: told of every applied pass

    # ---- stages 1 .. N-1 -------------------------------------------------------------------------
    def run_relay(self) -> None:
        assert self.transport is not None
        t, prev = self.transport, self.rank - 1
        last = self.rank == self.stages - 1
        items = self._items_from(self.start_iteration)
        parts = len(self.runner.parts)
        t.expect(prev, self.runner.hidden_spec(), len(items) * parts)
        dst = 0 if last else self.rank + 1
        for item in items:
            if self.hooks.on_iteration is not None and self._is_first_of_iteration(item):
                self.hooks.on_iteration(item.iteration)
            for part in range(parts):  # micro-batches of one pass (cfg_split), in order
                with self.timeline.span("recv", item.order):
                    x = t.recv(prev)
                with self.timeline.span("compute", item.order):
                    y = self.runner.forward(item, x, part)
                if y is None:  # the last stage returns once the pass's last micro-batch is through
                    continue
                if last:
                    y = self.runner.pad_output(y)
                with self.timeline.span("send", item.order):
                    t.send(y, dst)
        t.flush()

    # ---- stage 0 ------------------------------------------------------------------------------------
    def run_stage0(
        self, queue: BlockQueue, output: OutputWorker, progress: Progress, result: Stage0Result | None = None
    ) -> Stage0Result:
        """Render from `start_iteration`; `result` carries a resumed run's measurements so far. Returns with
        every retired block written (`output` drained)."""
        result = result if result is not None else Stage0Result()
        plan = self.job.plan
        mode = self.job.cfg.schedule.left_context
        pending: deque[WorkItem] = deque()
        # Every pass before the start iteration has been applied (a resumed queue holds its results).
        applied = [self._first_order(self.start_iteration) - 1]
        self.progress = progress
        progress.start(len(plan.items), applied[0] + 1, self.start_iteration)
        # Finished blocks are retired (handed to the output worker) once their last pass has come back, not
        # at the iteration start: waiting there would drain the pipeline once per iteration.
        due: deque[int] = deque()
        wait0 = [output.wait_s]

        def retire_ready(drain: bool = False) -> None:
            while due and plan.item_index(due[0], plan.steps - 1) <= applied[0]:
                block = due.popleft()
                with self.timeline.span("output_wait", block):  # back-pressure (inline: the whole write)
                    output.submit(block, queue.finish(block))
            if drain:
                with self.timeline.span("output_wait"):
                    self._account(output.drain(), progress, result)
            else:
                self._account(output.poll(), progress, result)  # raises a failed worker's error here
            result.output_wait_s += output.wait_s - wait0[0]
            wait0[0] = output.wait_s

        for it in plan.iterations[self.start_iteration :]:
            self._boundary(it.index, queue, pending, applied, retire_ready)
            if it.finished is not None:
                due.append(it.finished)
            if it.joined is not None:
                queue.join(it.joined)
            t_iter = time.perf_counter()
            for item in it.items:
                for dep in plan.dependencies(item, mode):
                    self._wait_for(dep, queue, pending, applied)
                retire_ready()
                window = queue.window(item)
                for part in range(len(self.runner.parts)):
                    with self.timeline.span("compute", item.order):
                        out = self.runner.forward(item, window, part)
                    if self.stages > 1:
                        with self.timeline.span("send", item.order):
                            self.transport.send(out, 1)
                if self.stages == 1:
                    with self.timeline.span("scheduler", item.order):
                        queue.apply(item, out)
                    applied[0] = item.order
                    progress.pass_done()
                else:
                    pending.append(item)
            result.denoise_s += time.perf_counter() - t_iter
        self._drain(queue, pending, applied)
        retire_ready(drain=True)
        if self.transport is not None:
            self.transport.flush()
        return result

    def _boundary(self, iteration: int, queue: BlockQueue, pending: deque, applied: list[int], retire_ready) -> None:
        hooks = self.hooks
        if hooks.on_iteration is not None:
            hooks.on_iteration(iteration)
        if hooks.snapshot is not None and hooks.wants_snapshot is not None and hooks.wants_snapshot(iteration):
            with self.timeline.span("drain", iteration):
                self._drain(queue, pending, applied)
            retire_ready(drain=True)  # the snapshot holds every block finished before this iteration as written
            hooks.snapshot(iteration)

    def _first_order(self, iteration: int) -> int:
        """Global order of the first pass at or after `iteration` (one past the last pass if none)."""
        for it in self.job.plan.iterations[iteration:]:
            if it.items:
                return it.items[0].order
        return len(self.job.plan.items)

    def _items_from(self, iteration: int) -> list[WorkItem]:
        return [item for it in self.job.plan.iterations[iteration:] for item in it.items]

    def _is_first_of_iteration(self, item: WorkItem) -> bool:
        it = self.job.plan.iterations[item.iteration]
        return it.items[0].order == item.order

    def expect_outputs(self) -> None:
        """Stage 0 of a multi-stage job: pre-post receives for the returned outputs.

        Stage 0 takes outputs only when a later pass needs them, so up to two iterations' passes can be
        outstanding. Every one of them gets a posted receive: then the last stage's sends always complete,
        every stage keeps draining its input, and stage 0's own sends complete in turn. With fewer, a long
        iteration (more blocks in flight than receives) deadlocks with every rank waiting on a send. The
        outputs are the own frames' velocities, small beside the hidden states."""
        if self.stages > 1:
            n = len(self._items_from(self.start_iteration))
            depth = 2 * self.job.plan.max_in_flight + 2
            self.transport.expect(self.stages - 1, self.runner.output_spec(), n, depth=depth)

    def _wait_for(self, order: int, queue: BlockQueue, pending: deque, applied: list[int]) -> None:
        while applied[0] < order:
            item = pending.popleft()
            with self.timeline.span("wait", item.order):
                out = self.transport.recv(self.stages - 1)
            with self.timeline.span("scheduler", item.order):
                queue.apply(item, self.runner.unpad_output(item, out))
            applied[0] = item.order
            if self.progress is not None:
                self.progress.pass_done()

    def _drain(self, queue: BlockQueue, pending: deque, applied: list[int]) -> None:
        if pending:
            self._wait_for(pending[-1].order, queue, pending, applied)

    def _account(self, written: list[Written], progress: Progress, result: Stage0Result) -> None:
        """Blocks the output worker finished: measurements, progress, and their decode spans (measured on the
        worker, recorded beside the pipeline's own spans)."""
        for w in written:
            self.timeline.record("decode", w.block, w.t0, w.t1)
            result.decode_s += w.seconds
            result.frames += w.frames
            result.block_seconds.append(w.seconds)
            progress.block_done(w.frames)
