"""Calibrate the cost model from a real run's report.json and predict other stage counts.

The FLOP model is only as good as its efficiency factors; a measured run is better. From the engine's
`report.json` (timeline spans per stage, the plan, phase times) this module extracts seconds per layer-pass
(with and without right-context keys), per-pass embed/head time, the scheduler step and the decode time per
latent frame, then replays the same plan with another number of stages. `predict_from_report(report, 2)`
is the one-liner a "predict a 2-stage CPU run within 10%" test needs.

Fields read from report.json (others are ignored):
- `timeline.stages[*]`: `stage`, `layers` [start, stop), `spans` [{kind, item (global order), t0, t1}]
  with kinds compute (the stage's layers for one micro-batch; embed/head spans nested inside it are
  subtracted), embed (stage 0), head (last stage, incl. guidance), scheduler, decode (one block, any
  item value), wait/send/recv (not used for costs). Without embed/head spans their time is spread over
  the layers, which slightly misplaces it when predicting other stage counts;
- `plan`: n_blocks, steps, block_latents, context_latents, tokens_per_frame, stages, split; optional
  cfg_split, left_context, max_inflight, decode_at, head_wait, checkpoint_every, hidden_bytes and
  velocity_bytes (bytes of one message of each kind);
- `wall_s`, `phases`: load_s, encode_s, denoise_s, decode_s; optional `threads_per_process`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import fmean
from typing import Any

from dualpar.plan_split import split_layers
from dualpar.schedule.blockwise import blockwise_plan
from dualpar.sim.cluster import ClusterSpec, load_cluster
from dualpar.sim.costs import CostModel
from dualpar.sim.pipeline import PipelineConfig, PipelineResult, run_pipeline

Report = Mapping[str, Any]
NESTED_KINDS = ("embed", "head")


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

    def costs(
        self, hidden_msg_s: float = 0.0, velocity_msg_s: float = 0.0, slowdown: float = 1.0
    ) -> CostModel:
        """A CostModel for the replay; `slowdown` scales compute (e.g. CPU oversubscription)."""
        return CostModel(
            layer_s=self.layer_s * slowdown,
            layer_right_s=self.layer_right_s * slowdown,
            embed_s=self.embed_s * slowdown,
            head_s=self.head_s * slowdown,
            guidance_s=0.0,
            scheduler_s=self.scheduler_s * slowdown,
            decode_s_per_latent=self.decode_s_per_latent * slowdown,
            encode_s=self.encode_s,
            hidden_msg_s=hidden_msg_s,
            velocity_msg_s=velocity_msg_s,
        )


def load_report(path_or_report: str | Path | Report) -> Report:
    if isinstance(path_or_report, Mapping):
        return path_or_report
    return json.loads(Path(path_or_report).read_text())


def _durations(report: Report, kind: str) -> list[tuple[int, int, float]]:
    """(stage, item, seconds) of every span of `kind`. A compute span's nested embed/head spans (same
    stage and item, inside its interval) are subtracted, so the engine may record them either nested in
    or beside the compute span."""
    out = []
    for st in report["timeline"]["stages"]:
        spans = st["spans"]
        extras: dict[int, list[tuple[float, float]]] = {}
        if kind == "compute":
            for sp in spans:
                if sp["kind"] in NESTED_KINDS:
                    extras.setdefault(int(sp.get("item", -1)), []).append((float(sp["t0"]), float(sp["t1"])))
        for sp in spans:
            if sp["kind"] != kind:
                continue
            item, t0, t1 = int(sp.get("item", -1)), float(sp["t0"]), float(sp["t1"])
            inner = sum(b - a for a, b in extras.get(item, ()) if a >= t0 and b <= t1)
            out.append((int(st["stage"]), item, t1 - t0 - inner))
    return out


def calibrate(report_json: str | Path | Report) -> LayerTiming:
    """Per-layer and per-pass costs from a run's report (any stage count; a 1-stage run is cleanest)."""
    report = load_report(report_json)
    plan_info = report["plan"]
    plan = blockwise_plan(int(plan_info["n_blocks"]), int(plan_info["steps"]))
    n_layers = {
        int(s["stage"]): int(s["layers"][1]) - int(s["layers"][0]) for s in report["timeline"]["stages"]
    }
    plain, right = [], []
    for stage, item, dur in _durations(report, "compute"):
        (right if plan.items[item].has_right else plain).append(dur / n_layers[stage])
    if not plain and not right:
        raise ValueError("report.json has no 'compute' spans: cannot calibrate")
    layer_s = fmean(plain) if plain else fmean(right)
    layer_right_s = fmean(right) if right else layer_s
    p, c = int(plan_info["block_latents"]), int(plan_info["context_latents"])
    decoded = sum(d for _, _, d in _durations(report, "decode"))
    tpf = int(plan_info["tokens_per_frame"])
    return LayerTiming(
        q_tokens=(p + c) * tpf,
        right_tokens=c * tpf,
        layer_s=layer_s,
        layer_right_s=layer_right_s,
        embed_s=_mean(report, "embed"),
        head_s=_mean(report, "head"),
        scheduler_s=_mean(report, "scheduler"),
        decode_s_per_latent=decoded / (plan.n_blocks * p + c),
        encode_s=float(report.get("phases", {}).get("encode_s", 0.0)),
        samples=len(plain) + len(right),
    )


def _mean(report: Report, kind: str) -> float:
    d = [x for _, _, x in _durations(report, kind)]
    return fmean(d) if d else 0.0


def _replay(report: Report, timing: LayerTiming, stages: int, cluster: ClusterSpec) -> PipelineResult:
    info = report["plan"]
    num_layers = int(info["split"][-1][1])
    hidden, velocity = info.get("hidden_bytes"), info.get("velocity_bytes")
    if stages > 1 and (hidden is None or velocity is None):
        warnings.warn(
            "report plan lacks hidden_bytes/velocity_bytes: messages modelled as free", stacklevel=3
        )
    threads = int(report.get("threads_per_process", cluster.threads_per_process))
    cl = replace(cluster, threads_per_process=threads)
    slowdown = cl.compute_slowdown(stages) / cl.compute_slowdown(int(info.get("stages", 1)))
    many = stages > 1
    costs = timing.costs(
        hidden_msg_s=cluster.link.transfer_s(float(hidden or 0)) if many else 0.0,
        velocity_msg_s=cluster.link.transfer_s(float(velocity or 0)) if many else 0.0,
        slowdown=slowdown,
    )
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
    plan = blockwise_plan(int(info["n_blocks"]), int(info["steps"]))
    return run_pipeline(plan, split_layers(num_layers, stages), costs, cfg)


def predict_breakdown(
    report_json: str | Path | Report, stages: int, cluster: str | ClusterSpec = "cpu2"
) -> dict:
    """Replay the measured run at its own stage count and at `stages`; everything outside the replayed
    window (process start, loading, text encoding) is carried over unchanged from the measured wall time."""
    report = load_report(report_json)
    cl = load_cluster(cluster) if isinstance(cluster, str) else cluster
    timing = calibrate(report)
    own = _replay(report, timing, int(report["plan"].get("stages", 1)), cl)
    new = _replay(report, timing, stages, cl)
    wall = float(report["wall_s"])
    outside = wall - own.makespan_s
    return {
        "measured_wall_s": wall,
        "replayed_own_s": own.makespan_s,
        "outside_s": outside,
        "predicted_denoise_decode_s": new.makespan_s,
        "predicted_wall_s": outside + new.makespan_s,
        "predicted_idle_fraction": new.idle_fractions(),
    }


def predict_from_report(
    report_json: str | Path | Report, stages: int, cluster: str | ClusterSpec = "cpu2"
) -> float:
    """Predicted wall seconds of the same job with `stages` stages (see `predict_breakdown`)."""
    return float(predict_breakdown(report_json, stages, cluster)["predicted_wall_s"])
