"""Export a simulated run: as an engine-shaped report.json (synthetic calibration input) or a Chrome trace.

`report_from_sim` writes exactly the fields `dualpar.sim.calibrate` reads, so it doubles as the reference
of the report format the engine is asked to produce. `chrome_trace` gives one process per stage with a
compute lane and a communication lane, viewable in chrome://tracing or Perfetto.
"""

from __future__ import annotations

from typing import Any

from dualpar.sim.simulate import SimResult

COMM_KINDS = frozenset({"send", "recv"})


def report_from_sim(result: SimResult, load_s: float = 0.0) -> dict[str, Any]:
    """An engine-shaped report of a simulated run (needs `simulate(..., record=True)`)."""
    job, geo = result.job, result.geometry
    offset = load_s + result.costs.encode_s
    stages = []
    for st in result.pipeline.stages:
        spans = [{"kind": s.kind, "item": s.item, "t0": s.t0 + offset, "t1": s.t1 + offset} for s in st.spans]
        stages.append({"stage": st.stage, "layers": [st.layers.start, st.layers.stop], "spans": spans})
    decode_s = sum(s.t1 - s.t0 for s in result.pipeline.stages[0].spans if s.kind == "decode")
    return {
        "timeline": {"stages": stages},
        "plan": {
            "n_blocks": job.n_blocks,
            "steps": job.steps,
            "block_latents": job.block_latents,
            "context_latents": job.context_latents,
            "tokens_per_frame": geo.tpf,
            "stages": job.stages,
            "split": [[r.start, r.stop] for r in result.ranges],
            "cfg_split": job.cfg_split,
            "left_context": job.left_context,
            "max_inflight": job.max_inflight,
            "decode_at": job.decode_at,
            "head_wait": job.head_wait,
            "checkpoint_every": job.checkpoint_every,
            "hidden_bytes": geo.hidden_msg_bytes,
            "velocity_bytes": geo.velocity_msg_bytes,
        },
        "wall_s": load_s + result.latency_s,
        "phases": {
            "load_s": load_s,
            "encode_s": result.costs.encode_s,
            "denoise_s": result.pipeline.makespan_s - decode_s,
            "decode_s": decode_s,
        },
    }


def chrome_trace(result: SimResult) -> dict[str, Any]:
    """Chrome trace-event JSON (microseconds): pid = stage, tid 0 = compute, tid 1 = communication."""
    events: list[dict[str, Any]] = []
    for st in result.pipeline.stages:
        name = f"stage {st.stage} layers {st.layers.start}-{st.layers.stop - 1}"
        events.append({"ph": "M", "name": "process_name", "pid": st.stage, "args": {"name": name}})
        for s in st.spans:
            events.append(
                {
                    "ph": "X",
                    "name": f"{s.kind} {s.item}",
                    "cat": s.kind,
                    "pid": st.stage,
                    "tid": 1 if s.kind in COMM_KINDS else 0,
                    "ts": s.t0 * 1e6,
                    "dur": (s.t1 - s.t0) * 1e6,
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms"}
