"""Discrete-event replay of the block-queue plan through N pipeline stages.

Why a replay and not a formula: the bubble depends on the dependency structure of `plan.items` (a pass
needs its block's previous step and its left neighbour's update), on how many blocks are in flight, on the
bounded in-flight sends and pre-posted receive buffers, and on stage 0's extra work (scheduler steps, VAE
decode). This module walks the engine's own plan (`dualpar.schedule.blockwise`) exactly as the engine does:

- every stage handles micro-batches strictly in global order (item order x cfg half);
- stage 0, before the first half of item X, consumes the returned velocities of every item up to X's
  latest dependency, in order, applying a scheduler step for each. With `head_wait` (the engine and the
  published code) it also waits, at each iteration start, for the block that finishes there. A block
  whose last step it applied is decoded at once (`decode_at=retire`), one latent frame before each
  later item (`interleave`), or with all others at the end (`end`, the published code). A checkpoint
  every k iterations first drains every returned velocity. Then embed + its layers, then send;
- a middle stage receives, runs its layers, sends; the last stage adds head + guidance and returns the
  velocity (once per item, after the last half) to stage 0;
- a send waits for a free slot (`max_inflight` outstanding per peer) and for the receiver's pre-posted
  buffer (`max_inflight` buffers, freed when that micro-batch's compute ends); each hop is one FIFO link.
  Posting a send and taking a received message also keep the stage itself busy (`send_cpu_s`,
  `recv_cpu_s`: span kind `comm`), which matters on CPU hosts where gloo shares the cores with the layers.

Events are processed unit by unit and stage by stage: every quantity a stage needs (its input's arrival,
the receiver's buffer, returned velocities of earlier items) is then already known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dualpar.schedule.blockwise import BlockPlan, WorkItem
from dualpar.sim.costs import CostModel

BUSY_KINDS = frozenset({"embed", "compute", "head", "scheduler", "decode", "comm"})


@dataclass(frozen=True)
class Span:
    """One interval on a stage: kind in compute|embed|head|scheduler|decode|comm|wait|send|recv."""

    kind: str
    item: int
    t0: float
    t1: float


@dataclass(frozen=True)
class StageTimeline:
    """A stage's layers, its spans (if recorded) and its busy time."""

    stage: int
    layers: range
    spans: tuple[Span, ...]
    busy_s: float
    wait_s: float


@dataclass(frozen=True)
class PipelineResult:
    """The replay's outcome: makespan from the first pass to the last decode, per-stage busy time."""

    makespan_s: float
    stages: tuple[StageTimeline, ...]
    compute_events: int
    dependency_wait_s: float

    def idle_fractions(self) -> list[float]:
        if self.makespan_s <= 0:
            return [0.0 for _ in self.stages]
        return [1.0 - s.busy_s / self.makespan_s for s in self.stages]

    def mean_idle_fraction(self) -> float:
        fr = self.idle_fractions()
        return sum(fr) / len(fr)


@dataclass(frozen=True)
class PipelineConfig:
    """The knobs of the replay that are not costs."""

    halves: int = 1
    left_context: str = "ahead"
    max_inflight: int = 2
    decode_at: str = "retire"
    head_wait: bool = True
    checkpoint_every: int = 0
    block_latents: int = 8
    context_latents: int = 8
    record: bool = True


@dataclass
class _Lane:
    spans: list[Span] = field(default_factory=list)
    busy: float = 0.0
    wait: float = 0.0


class _Replay:
    """Mutable state of one replay; `run` drives it."""

    def __init__(self, plan: BlockPlan, ranges: list[range], costs: CostModel, cfg: PipelineConfig):
        self.plan, self.ranges, self.c, self.cfg = plan, ranges, costs, cfg
        self.n = len(ranges)
        self.items = plan.items
        units = len(self.items) * cfg.halves
        self.free = [0.0] * self.n
        self.end_c = [[0.0] * units for _ in range(self.n)]
        self.sent = [[0.0] * units for _ in range(self.n)]
        self.arrive = [[0.0] * units for _ in range(self.n)]
        self.link_free = [0.0] * self.n  # hop j -> j+1; index n-1 is the return hop to stage 0
        self.vel_at = [0.0] * len(self.items)
        self.ret_sent = [0.0] * len(self.items)
        self.consumed = 0
        self.dep_wait = 0.0
        self.compute_events = 0
        self.pending_decode: list[float] = []
        self.lanes = [_Lane() for _ in range(self.n)]

    def span(self, j: int, kind: str, item: int, t0: float, dur: float) -> float:
        lane = self.lanes[j]
        self.compute_events += kind == "compute"
        if kind in BUSY_KINDS:
            lane.busy += dur
        elif kind == "wait":
            lane.wait += dur
        if self.cfg.record and dur > 0:
            lane.spans.append(Span(kind, item, t0, t0 + dur))
        return t0 + dur

    def wait_until(self, j: int, item: int, t: float, ready: float) -> float:
        return self.span(j, "wait", item, t, ready - t) if ready > t else t

    def layers_s(self, j: int, x: WorkItem) -> float:
        per = self.c.layer_right_s if x.has_right else self.c.layer_s
        return self.c.stage_s + len(self.ranges[j]) * per

    def block_latents(self, block: int) -> int:
        p, c = self.cfg.block_latents, self.cfg.context_latents
        return p + c if block == 0 else p

    def consume_until(self, order: int, t: float) -> float:
        """Stage 0 applies returned velocities in order up to `order` (waiting for them if needed)."""
        last_step = self.plan.steps - 1
        while self.consumed <= order:
            k = self.consumed
            if self.vel_at[k] > t:
                self.dep_wait += self.vel_at[k] - t
            t = self.wait_until(0, k, t, self.vel_at[k])
            if self.n > 1:
                t = self.span(0, "comm", k, t, self.c.recv_cpu_s)
            t = self.span(0, "scheduler", k, t, self.c.scheduler_s)
            x = self.items[k]
            if x.step == last_step and self.cfg.decode_at != "end":
                self.pending_decode.extend([self.c.decode_s_per_latent] * self.block_latents(x.block))
                if self.cfg.decode_at != "interleave":
                    t = self.decode(k, t, len(self.pending_decode))
            self.consumed += 1
        return t

    def decode(self, item: int, t: float, chunks: int) -> float:
        """Decode `chunks` pending latent frames (the causal VAE streams frame by frame)."""
        chunks = min(chunks, len(self.pending_decode))
        dur = sum(self.pending_decode[:chunks])
        del self.pending_decode[:chunks]
        return self.span(0, "decode", item, t, dur)

    def send(self, j: int, u: int, item: int, t: float) -> float:
        """Post the send of micro-batch u from stage j to j+1; returns when stage j may go on."""
        k = self.cfg.max_inflight
        if u >= k:
            t = self.wait_until(j, item, t, self.sent[j][u - k])
        t = self.span(j, "comm", item, t, self.c.send_cpu_s)
        buffer_free = self.end_c[j + 1][u - k] if u >= k else 0.0
        start = max(t, self.link_free[j], buffer_free)
        end = start + self.c.hidden_msg_s
        self.link_free[j] = self.sent[j][u] = self.arrive[j + 1][u] = end
        if self.cfg.record and end > start:
            self.lanes[j].spans.append(Span("send", item, start, end))
            self.lanes[j + 1].spans.append(Span("recv", item, start, end))
        return t

    def send_velocity(self, x: WorkItem, t: float) -> float:
        """The last stage returns the block's own-frame velocity to stage 0 (receives pre-posted)."""
        k, o, last = self.cfg.max_inflight, x.order, self.n - 1
        if o >= k:
            t = self.wait_until(last, o, t, self.ret_sent[o - k])
        t = self.span(last, "comm", o, t, self.c.send_cpu_s)
        scale = self.block_latents(x.block) / self.cfg.block_latents
        start = max(t, self.link_free[last])
        end = start + self.c.velocity_msg_s * scale
        self.link_free[last] = self.ret_sent[o] = self.vel_at[o] = end
        if self.cfg.record and end > start:
            self.lanes[last].spans.append(Span("send", o, start, end))
            self.lanes[0].spans.append(Span("recv", o, start, end))
        return t

    def first_stage(self, x: WorkItem, h: int, u: int) -> None:
        t = self.free[0]
        if h == 0:
            t = self.before_item(x, t)
        t = self.span(0, "embed", x.order, t, self.c.embed_s)
        t = self.span(0, "compute", x.order, t, self.layers_s(0, x))
        if self.n == 1:
            t = self.head(0, x, h, t)
        self.end_c[0][u] = t
        self.free[0] = self.send(0, u, x.order, t) if self.n > 1 else t

    def before_item(self, x: WorkItem, t: float) -> float:
        it = self.plan.iterations[x.iteration]
        first = x is it.items[0]
        every = self.cfg.checkpoint_every
        if first and every and it.index % every == 0:  # a checkpoint drains every returned velocity
            t = self.consume_until(x.order - 1, t)
        if self.cfg.head_wait and first and it.finished is not None:
            t = self.consume_until(self.plan.item_index(it.finished, self.plan.steps - 1), t)
        deps = self.plan.dependencies(x, self.cfg.left_context)
        t = self.consume_until(max(deps), t) if deps else t
        if self.cfg.decode_at == "interleave" and self.pending_decode:
            t = self.decode(x.order, t, 1)
        return t

    def head(self, j: int, x: WorkItem, h: int, t: float) -> float:
        dur = self.c.head_s + (self.c.guidance_s if h == self.cfg.halves - 1 else 0.0)
        t = self.span(j, "head", x.order, t, dur)
        if h == self.cfg.halves - 1 and self.n == 1:
            self.vel_at[x.order] = t
        return t

    def later_stage(self, j: int, x: WorkItem, h: int, u: int) -> None:
        t = self.wait_until(j, x.order, self.free[j], self.arrive[j][u])
        t = self.span(j, "comm", x.order, t, self.c.recv_cpu_s)
        t = self.span(j, "compute", x.order, t, self.layers_s(j, x))
        if j == self.n - 1:
            t = self.head(j, x, h, t)
        self.end_c[j][u] = t
        if j < self.n - 1:
            t = self.send(j, u, x.order, t)
        elif h == self.cfg.halves - 1:
            t = self.send_velocity(x, t)
        self.free[j] = t


def run_pipeline(
    plan: BlockPlan, ranges: list[range], costs: CostModel, cfg: PipelineConfig
) -> PipelineResult:
    """Replay `plan` through `len(ranges)` stages; see the module docstring for the rules."""
    r = _Replay(plan, ranges, costs, cfg)
    for x in r.items:
        for h in range(cfg.halves):
            u = x.order * cfg.halves + h
            r.first_stage(x, h, u)
            for j in range(1, r.n):
                r.later_stage(j, x, h, u)
    t = r.consume_until(len(r.items) - 1, r.free[0])
    t = r.decode(len(r.items) - 1, t, len(r.pending_decode)) if r.pending_decode else t
    if cfg.decode_at == "end":
        total = sum(r.block_latents(b) for b in range(plan.n_blocks))
        t = r.span(0, "decode", len(r.items) - 1, t, costs.decode_s_per_latent * total)
    makespan = max([t, *r.free])
    stages = tuple(
        StageTimeline(j, ranges[j], tuple(sorted(lane.spans, key=lambda s: s.t0)), lane.busy, lane.wait)
        for j, lane in enumerate(r.lanes)
    )
    return PipelineResult(makespan, stages, r.compute_events, r.dep_wait)
