"""Sensitivity sweeps and a layout suggestion on top of the simulator.

Questions this answers before renting GPUs: how latency and memory move with the number of stages, the
block size P, the context C, cfg_split, the layer split and the decode policy; and which layout
(stages, P, C, split, cfg_split) is fastest while fitting device memory. C (how many latent frames of
each neighbour a block sees) is a quality knob, so `suggest` keeps the job's C and only tries P >= C;
otherwise the fastest layout would always be the smallest window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dualpar.plan_split import split_layers
from dualpar.schedule.blockwise import idle_fraction_estimate
from dualpar.sim.cluster import GIB, ClusterSpec
from dualpar.sim.costs import flop_costs, layer_ranges
from dualpar.sim.job import DECODE_POLICIES, Job
from dualpar.sim.memory import stage_memory
from dualpar.sim.model import ModelSpec
from dualpar.sim.simulate import simulate

BLOCK_OPTIONS = (2, 4, 6, 8, 12, 16, 20)
MEMORY_HEADROOM = 0.92  # allocator fragmentation and unmodelled buffers


def plan_warnings(job: Job) -> list[str]:
    """Layout problems the planner should report up front."""
    out = []
    in_flight = min(job.n_blocks, job.steps) * job.halves
    if in_flight < job.stages:
        out.append(
            f"only {in_flight} micro-batches in flight for {job.stages} stages: most stages idle "
            "(use fewer stages, smaller blocks or cfg_split)"
        )
    return out


def sweep(job: Job, model: ModelSpec, cluster: ClusterSpec, param: str, values: Iterable[Any]) -> list[dict]:
    """One summary row per value of one Job field."""
    rows = []
    for v in values:
        j = replace(job, **{param: v})
        if param == "block_latents":
            j = replace(j, context_latents=min(job.context_latents, int(v)))
        row = simulate(j, model, cluster).summary()
        row["param"], row["value"] = param, v if not isinstance(v, tuple) else list(v)
        row["formula_idle"] = round(idle_fraction_estimate(j.stages, j.steps, j.n_blocks), 4)
        rows.append(row)
    return rows


def sensitivity(job: Job, model: ModelSpec, cluster: ClusterSpec) -> dict[str, list[dict]]:
    """The standard sweeps: stages, P (C capped at P), C, cfg_split, split mode, decode policy, head wait,
    in-flight bound."""
    p = job.block_latents
    return {
        "stages": sweep(job, model, cluster, "stages", range(1, cluster.gpus + 1)),
        "block_latents": sweep(job, model, cluster, "block_latents", [b for b in BLOCK_OPTIONS]),
        "context_latents": sweep(job, model, cluster, "context_latents", sorted({0, p // 4, p // 2, p})),
        "cfg_split": sweep(job, model, cluster, "cfg_split", [False, True]),
        "split": sweep(job, model, cluster, "split", ["even", "cost_aware"]),
        "decode_at": sweep(job, model, cluster, "decode_at", DECODE_POLICIES),
        "head_wait": sweep(job, model, cluster, "head_wait", [True, False]),
        "max_inflight": sweep(job, model, cluster, "max_inflight", [1, 2, 4]),
    }


@dataclass(frozen=True)
class Suggestion:
    """The fastest layout that fits; unpacks as (stages, P, C, split)."""

    stages: int
    block_latents: int
    context_latents: int
    split: str
    cfg_split: bool
    latency_s: float
    peak_memory_gib: float
    fits: bool

    def __iter__(self) -> Iterator[Any]:
        return iter((self.stages, self.block_latents, self.context_latents, self.split))


def _peak_memory(job: Job, model: ModelSpec, cluster: ClusterSpec) -> float:
    ranges = layer_ranges(job, model.num_layers, flop_costs(job, model, cluster))
    return max(m.total for m in stage_memory(job, model, cluster, ranges))


def lighter_first(num_layers: int, stages: int, fewer: int) -> tuple[int, ...] | None:
    """An explicit split giving stage 0 `fewer` layers less than an even share (it also holds the decoder,
    the block latents and the scheduler state), the rest spread evenly; None if impossible."""
    first = num_layers // stages - fewer
    if stages < 2 or first < 1:
        return None
    rest = [len(r) for r in split_layers(num_layers - first, stages - 1)]
    return (first, *rest)


def candidates(job: Job, model: ModelSpec, blocks: Sequence[int], stages: Sequence[int]) -> list[Job]:
    """Layouts to try: every stage count, P >= C, even / cost-aware / lighter-stage-0 splits, with and
    without cfg_split."""
    out = []
    for n in (s for s in stages if s <= model.num_layers):
        splits: list[str | tuple[int, ...]] = ["even", "cost_aware"]
        splits += [s for s in (lighter_first(model.num_layers, n, k) for k in (1, 2)) if s is not None]
        for p in (b for b in blocks if b >= job.context_latents):
            for split in splits:
                for cfg_split in (False, True):
                    out.append(replace(job, stages=n, block_latents=p, split=split, cfg_split=cfg_split))
    return out


def suggest(
    job: Job,
    cluster: ClusterSpec,
    model: ModelSpec,
    blocks: Sequence[int] = BLOCK_OPTIONS,
    stages: Sequence[int] | None = None,
    headroom: float = MEMORY_HEADROOM,
) -> Suggestion:
    """Minimise predicted latency over `candidates` (stages, P >= C, split, cfg_split) under the memory
    limit. If nothing fits, return the layout with the smallest peak memory (fits=False)."""
    limit = cluster.device.memory_bytes * headroom
    options = candidates(job, model, blocks, stages or range(1, cluster.gpus + 1))
    peaks = [(_peak_memory(j, model, cluster), j) for j in options]
    fitting = [j for peak, j in peaks if peak <= limit]
    if not fitting:
        peak, j = min(peaks, key=lambda pj: pj[0])
        r = simulate(j, model, cluster)
        return _suggestion(j, r.latency_s, peak, False)
    best = min((simulate(j, model, cluster) for j in fitting), key=lambda r: r.latency_s)
    return _suggestion(best.job, best.latency_s, best.peak_memory, True)


def _suggestion(job: Job, latency: float, peak: float, fits: bool) -> Suggestion:
    split = job.split if isinstance(job.split, str) else ",".join(map(str, job.split))
    return Suggestion(
        job.stages,
        job.block_latents,
        job.context_latents,
        split,
        job.cfg_split,
        latency,
        round(peak / GIB, 3),
        fits,
    )
