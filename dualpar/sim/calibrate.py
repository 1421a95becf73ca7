"""Calibrate the cost model from a real run's report.json and predict other stage counts.

The FLOP model is only as good as its efficiency factors; a measured run is better. From the engine's
`report.json` (timeline spans per stage, the plan, phase times) this module extracts seconds per layer-pass
(with and without right-context keys), per-pass embed/head time, the scheduler step, stage 0's time per pass
outside any span and the decode time per latent frame, then replays the same plan with another number of
stages. `predict_from_report(report, 2)` is the one-liner a "predict a 2-stage CPU run within 10%" test needs.

Rank 0's wall time is predicted part by part (`RunPhases`), because each part moves differently with the
stage count:
- render: the replay, with compute scaled by `ClusterSpec.compute_slowdown` (more ranks than cores, and
  processes slowing each other down once every core computes); on a CPU host every message also costs the
  sending and the receiving stage their own time (`LinkSpec.send_cpu_us`, `recv_cpu_us`). Render time the
  replay does not explain at the measured stage count is carried over;
- process group (`ClusterSpec.group_start_s`): waiting for the last rank's launch plus the rendezvous;
- collectives: the text-embedding and start-iteration broadcasts and the gather of every rank's timeline;
- load: every rank builds its stage at the same time, so the measured load time scales with the compute
  slowdown of that many processes; at the sizes run on CPU building a stage is per-process fixed work, not
  proportional to its layers (a report without per-rank load times cannot tell the two apart);
- encode and the rest (config, closing outputs, the report) are carried over from the measured run.

Fields read from report.json (others are ignored):
- `stages[*]`: `stage`, `layers` [start, stop), `timeline` (the engine's bounded per-kind summary:
  `kinds` {kind or kind/plain|right: {n, s}}, `covered_s`), or else `timeline.stages[*]`: `stage`, `layers`,
  `spans` [{kind, item (global order), t0, t1}] (simulated reports). Kinds: compute (the stage's layers
  for one micro-batch; embed/head/conditions spans nested inside it are subtracted), embed (stage 0), head
  (last stage, incl. guidance), conditions (the conditioning embeddings every stage computes for itself),
  scheduler, decode (one block, any item value), wait/send/recv (not used for costs). Without
  embed/head/conditions spans their time is spread over the layers, which slightly misplaces it when
  predicting other stage counts;
- `plan`: n_blocks, steps, block_latents, context_latents, tokens_per_frame, stages, split; optional
  cfg_split, left_context, max_inflight, decode_at, head_wait, checkpoint_every, hidden_bytes and
  velocity_bytes (bytes of one message of each kind);
- `wall_s`, `phases`: load_s, encode_s, render_s (else denoise_s + decode_s); optional
  `threads_per_process`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dualpar.plan_split import split_layers
from dualpar.schedule.blockwise import blockwise_plan
from dualpar.sim.cluster import ClusterSpec, load_cluster
from dualpar.sim.costs import CostModel
from dualpar.sim.pipeline import PipelineConfig, PipelineResult, run_pipeline

Report = Mapping[str, Any]
NESTED_KINDS = ("embed", "head", "conditions")
# Pickled size of one rank's timeline summary in the gather to rank 0, bytes (bounded: no per-span lists).
SUMMARY_BYTES = 4000
BROADCASTS = 3  # text-embedding shape, the embeddings, the start iteration
GATHER_STEPS = 2  # gather_object: object sizes, then the objects


@dataclass(frozen=True)
class LayerTiming:
    """Measured costs: seconds per layer-pass at the run's token counts, and per-pass overheads."""

    q_tokens: int
    right_tokens: int
    layer_s: float
    layer_right_s: float
    embed_s: float
    head_s: float
    scheduler_s: float
    decode_s_per_latent: float
    encode_s: float
    samples: int
    stage0_gap_s: float = 0.0  # stage 0 per pass in no span: building the window input, bookkeeping
    conditions_s: float = 0.0  # every stage per pass: its own conditioning embeddings

    def costs(
        self,
        hidden_msg_s: float = 0.0,
        velocity_msg_s: float = 0.0,
        slowdown: float = 1.0,
        halves: int = 1,
        send_cpu_s: float = 0.0,
        recv_cpu_s: float = 0.0,
    ) -> CostModel:
        """A CostModel for the replay; `slowdown` scales compute (e.g. CPU oversubscription). Stage 0's
        unspanned time per pass is charged before its layers, like the embedding (once per pass: 1/halves)."""
        return CostModel(
            layer_s=self.layer_s * slowdown,
            layer_right_s=self.layer_right_s * slowdown,
            embed_s=(self.embed_s + self.stage0_gap_s / halves) * slowdown,
            head_s=self.head_s * slowdown,
            guidance_s=0.0,
            scheduler_s=self.scheduler_s * slowdown,
            decode_s_per_latent=self.decode_s_per_latent * slowdown,
            encode_s=self.encode_s,
            hidden_msg_s=hidden_msg_s,
            velocity_msg_s=velocity_msg_s,
            send_cpu_s=send_cpu_s,
            recv_cpu_s=recv_cpu_s,
            stage_s=self.conditions_s * slowdown,
        )


@dataclass(frozen=True)
class RunPhases:
    """Rank 0's wall time by cause, in seconds (`wall_s` is the sum), measured or predicted.

    Exists because the parts move differently with the stage count: the render phase by replay, the process
    group and the collectives with the number of ranks, the rest not at all. Carrying everything outside the
    render phase over as one lump under-predicted multi-stage runs.
    """

    fixed_s: float  # resolving the config, closing the outputs, writing the report
    group_s: float  # waiting for every rank to join the process group
    load_s: float  # building this rank's stage, the scheduler (and the codec)
    encode_s: float  # rank 0's text encoding
    collective_s: float  # broadcasts of the text embeddings and start iteration, gather of the timelines
    render_s: float  # denoise with interleaved decode

    @property
    def wall_s(self) -> float:
        return self.fixed_s + self.group_s + self.load_s + self.encode_s + self.collective_s + self.render_s


def load_report(path_or_report: str | Path | Report) -> Report:
    if isinstance(path_or_report, Mapping):
        return path_or_report
    return json.loads(Path(path_or_report).read_text())


@dataclass(frozen=True)
class _StageTotals:
    """One stage's span totals: kind (or kind/tag, tag plain|right for per-pass kinds) -> (count, seconds),
    compute net of the embed/head/conditions spans nested in it; `covered_s`: time in any span."""

    stage: int
    layers: int
    kinds: dict[str, tuple[int, float]]
    covered_s: float


def _stage_totals(report: Report, plan) -> list[_StageTotals]:
    """From the engine's per-stage summaries (`stages[*].timeline`), else from span lists
    (`timeline.stages[*].spans`: simulated reports and reports written before summaries)."""
    stages = report.get("stages")
    if stages and isinstance(stages[0], Mapping) and "timeline" in stages[0]:
        return [_from_summary(st) for st in stages]
    return [_from_spans(st, plan) for st in report["timeline"]["stages"]]


def _from_summary(st: Mapping) -> _StageTotals:
    """The engine nests embed/head/conditions inside the compute span of the same pass."""
    kinds = {k: (int(v["n"]), float(v["s"])) for k, v in st["timeline"]["kinds"].items()}
    for tag in ("plain", "right"):
        n, total = kinds.get(f"compute/{tag}", (0, 0.0))
        if n:
            inner = sum(kinds.get(f"{k}/{tag}", (0, 0.0))[1] for k in NESTED_KINDS)
            kinds[f"compute/{tag}"] = (n, total - inner)
    return _StageTotals(
        int(st["stage"]), int(st["layers"][1]) - int(st["layers"][0]), kinds, float(st["timeline"]["covered_s"])
    )


def _from_spans(st: Mapping, plan) -> _StageTotals:
    """A compute span's nested embed/head spans (same item, inside its interval) are subtracted, so spans
    may be recorded either nested in or beside the compute span."""
    spans = st["spans"]
    extras: dict[int, list[tuple[float, float]]] = {}
    for sp in spans:
        if sp["kind"] in NESTED_KINDS:
            extras.setdefault(int(sp.get("item", -1)), []).append((float(sp["t0"]), float(sp["t1"])))
    kinds: dict[str, tuple[int, float]] = {}
    for sp in spans:
        kind, item, t0, t1 = sp["kind"], int(sp.get("item", -1)), float(sp["t0"]), float(sp["t1"])
        dur = t1 - t0
        if kind == "compute":
            dur -= sum(b - a for a, b in extras.get(item, ()) if a >= t0 and b <= t1)
            kind += "/right" if plan.items[item].has_right else "/plain"
        n, total = kinds.get(kind, (0, 0.0))
        kinds[kind] = (n + 1, total + dur)
    covered = _covered([(float(sp["t0"]), float(sp["t1"])) for sp in spans])
    return _StageTotals(int(st["stage"]), int(st["layers"][1]) - int(st["layers"][0]), kinds, covered)


def _total(stages: list[_StageTotals], kind: str) -> tuple[int, float]:
    """Count and seconds of `kind` over every stage and tag."""
    rows = [v for st in stages for k, v in st.kinds.items() if k == kind or k.startswith(kind + "/")]
    return sum(n for n, _ in rows), sum(s for _, s in rows)


def _per_layer(stages: list[_StageTotals], tag: str) -> tuple[int, float]:
    """(passes, mean seconds per layer-pass) of compute passes with `tag`."""
    n = sum(st.kinds.get(f"compute/{tag}", (0, 0.0))[0] for st in stages)
    s = sum(st.kinds.get(f"compute/{tag}", (0, 0.0))[1] / st.layers for st in stages)
    return n, (s / n if n else 0.0)


def calibrate(report_json: str | Path | Report) -> LayerTiming:
    """Per-layer and per-pass costs from a run's report (any stage count; a 1-stage run is cleanest)."""
    report = load_report(report_json)
    plan_info = report["plan"]
    plan = blockwise_plan(int(plan_info["n_blocks"]), int(plan_info["steps"]))
    stages = _stage_totals(report, plan)
    (n_plain, plain), (n_right, right) = _per_layer(stages, "plain"), _per_layer(stages, "right")
    if not n_plain and not n_right:
        raise ValueError("report.json has no 'compute' spans: cannot calibrate")
    layer_s = plain if n_plain else right
    layer_right_s = right if n_right else layer_s
    p, c = int(plan_info["block_latents"]), int(plan_info["context_latents"])
    decoded = _total(stages, "decode")[1]
    tpf = int(plan_info["tokens_per_frame"])
    return LayerTiming(
        q_tokens=(p + c) * tpf,
        right_tokens=c * tpf,
        layer_s=layer_s,
        layer_right_s=layer_right_s,
        embed_s=_mean(stages, "embed"),
        head_s=_mean(stages, "head"),
        scheduler_s=_mean(stages, "scheduler"),
        decode_s_per_latent=decoded / (plan.n_blocks * p + c),
        encode_s=float(report.get("phases", {}).get("encode_s", 0.0)),
        samples=n_plain + n_right,
        stage0_gap_s=_stage0_gap(report, stages, len(plan.items)),
        conditions_s=_mean(stages, "conditions"),
    )


def _mean(stages: list[_StageTotals], kind: str) -> float:
    n, s = _total(stages, kind)
    return s / n if n else 0.0


def _covered(spans: list[tuple[float, float]]) -> float:
    """Length of the union of intervals (nested embed/head spans are not counted twice)."""
    total, end = 0.0, float("-inf")
    for t0, t1 in sorted(spans):
        if t1 > end:
            total += t1 - max(t0, end)
            end = t1
    return total


def _stage0_gap(report: Report, stages: list[_StageTotals], passes: int) -> float:
    """Stage 0's render-phase seconds per pass in no span at all (engine reports, which carry `render_s`)."""
    render = report.get("phases", {}).get("render_s")
    stage0 = [s for s in stages if s.stage == 0]
    if render is None or not stage0 or passes <= 0:
        return 0.0
    return max(0.0, (float(render) - stage0[0].covered_s) / passes)


def measured_phases(report: Report, cluster: str | ClusterSpec = "cpu2") -> RunPhases:
    """The report's own wall time split into `RunPhases`: the process-group part as measured when the report
    has `phases.group_s` (else the model's), the collectives from the model; `fixed_s` is what remains."""
    report = load_report(report)
    cl = load_cluster(cluster) if isinstance(cluster, str) else cluster
    phases = report.get("phases", {})
    stages = int(report["plan"].get("stages", 1))
    render = _render_s(report)
    group, coll = cl.group_start_s(stages), collectives_s(report, stages, cl)
    if "group_s" in phases:  # measured by the worker (reports written since it records them)
        group = float(phases["group_s"])
    load, encode = float(phases.get("load_s", 0.0)), float(phases.get("encode_s", 0.0))
    fixed = float(report["wall_s"]) - load - encode - render - group - coll
    return RunPhases(fixed, group, load, encode, coll, render)


def _render_s(report: Report) -> float:
    phases = report.get("phases", {})
    if "render_s" in phases:
        return float(phases["render_s"])
    return float(phases.get("denoise_s", 0.0)) + float(phases.get("decode_s", 0.0))


def collectives_s(report: Report, stages: int, cluster: ClusterSpec) -> float:
    """Rank 0's time in the start-up broadcasts and the final gather of `stages` timelines (0 for one rank)."""
    if stages <= 1:
        return 0.0
    link = cluster.link
    others = stages - 1
    broadcast = BROADCASTS * (link.latency_us * 1e-6 + others * link.send_cpu_us * 1e-6)
    gather = GATHER_STEPS * link.latency_us * 1e-6 + others * (link.recv_cpu_us * 1e-6 + link.transfer_s(SUMMARY_BYTES))
    return broadcast + gather


@dataclass(frozen=True)
class Replay:
    """A replay at some stage count and the per-process compute slowdown it was run with."""

    result: PipelineResult
    slowdown: float


def _replay(report: Report, timing: LayerTiming, stages: int, cluster: ClusterSpec) -> Replay:
    info = report["plan"]
    num_layers = int(info["split"][-1][1])
    hidden, velocity = info.get("hidden_bytes"), info.get("velocity_bytes")
    if stages > 1 and (hidden is None or velocity is None):
        warnings.warn("report plan lacks hidden_bytes/velocity_bytes: messages modelled as free", stacklevel=3)
    threads = int(report.get("threads_per_process", cluster.threads_per_process))
    cl = replace(cluster, threads_per_process=threads)
    own = cl.compute_slowdown(int(info.get("stages", 1)))
    many = stages > 1
    cfg_split = bool(info.get("cfg_split", False))
    cfg = PipelineConfig(
        halves=2 if cfg_split else 1,
        left_context=str(info.get("left_context", "ahead")),
        max_inflight=int(info.get("max_inflight", 2)),
        decode_at=str(info.get("decode_at", "retire")),
        head_wait=bool(info.get("head_wait", True)),
        checkpoint_every=int(info.get("checkpoint_every", 0)),
        block_latents=int(info["block_latents"]),
        context_latents=int(info["context_latents"]),
        record=False,
    )
    slowdown = cl.compute_slowdown(stages)
    costs = timing.costs(
        hidden_msg_s=cl.link.transfer_s(float(hidden or 0)) if many else 0.0,
        velocity_msg_s=cl.link.transfer_s(float(velocity or 0)) if many else 0.0,
        slowdown=slowdown / own,
        halves=cfg.halves,
        send_cpu_s=cl.link.send_cpu_us * 1e-6 if many else 0.0,
        recv_cpu_s=cl.link.recv_cpu_us * 1e-6 if many else 0.0,
    )
    plan = blockwise_plan(int(info["n_blocks"]), int(info["steps"]))
    return Replay(run_pipeline(plan, split_layers(num_layers, stages), costs, cfg), slowdown)


def predict_breakdown(report_json: str | Path | Report, stages: int, cluster: str | ClusterSpec = "cpu2") -> dict:
    """Predict rank 0's wall time of the same job with `stages` stages, part by part (see the module
    docstring). At the report's own stage count it gives back the measured wall time exactly."""
    report = load_report(report_json)
    cl = load_cluster(cluster) if isinstance(cluster, str) else cluster
    timing = calibrate(report)
    own = _replay(report, timing, int(report["plan"].get("stages", 1)), cl)
    new = _replay(report, timing, stages, cl)
    measured = measured_phases(report, cl)
    unexplained = measured.render_s - own.result.makespan_s
    predicted = replace(
        measured,
        # the model's change from the measured stage count (the measured part itself when the report has it)
        group_s=measured.group_s + cl.group_start_s(stages) - cl.group_start_s(int(report["plan"].get("stages", 1))),
        load_s=measured.load_s * new.slowdown / own.slowdown,
        collective_s=collectives_s(report, stages, cl),
        render_s=new.result.makespan_s + unexplained,
    )
    return {
        "measured_wall_s": float(report["wall_s"]),
        "replayed_own_s": own.result.makespan_s,
        "outside_s": predicted.wall_s - predicted.render_s,
        "predicted_denoise_decode_s": predicted.render_s,
        "predicted_wall_s": predicted.wall_s,
        "predicted_idle_fraction": new.result.idle_fractions(),
        "predicted_slowdown": new.slowdown / own.slowdown,
        "measured_phases": asdict(measured),
        "phases": asdict(predicted),
    }


def predict_from_report(report_json: str | Path | Report, stages: int, cluster: str | ClusterSpec = "cpu2") -> float:
    """Predicted wall seconds of the same job with `stages` stages (see `predict_breakdown`)."""
    return float(predict_breakdown(report_json, stages, cluster)["predicted_wall_s"])
