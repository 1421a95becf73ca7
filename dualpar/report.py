"""report.json: what a render did, in a size that does not grow with the video.

Exists so the worker stays a composition root: every rank contributes `stage_stats` (its timeline summary,
parameter bytes, memory, attention statistics), and rank 0 turns what it measured (`RenderFacts`) into the
report with `build_report` and writes it with `write_report` (plus trace.json when `output.trace=true`, merged
from the ranks' streamed trace parts). Per-span lists never enter the report; the performance model's
calibration (dualpar.sim.calibrate) reads the per-kind summaries.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dualpar.timeline import merge_trace_parts

if TYPE_CHECKING:
    from dualpar.config import EngineConfig
    from dualpar.engine import PipelineEngine, Stage0Result
    from dualpar.job import JobLayout


def peak_rss_bytes() -> int:
    """This process's peak resident set size."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def right_context_tag(job: JobLayout):
    """Timeline tag splitting per-pass spans by whether the pass has right-context keys (calibration)."""
    items = job.plan.items
    per_pass = ("compute", "embed", "head", "conditions")

    def tag(kind: str, item: int) -> str | None:
        if kind not in per_pass or not 0 <= item < len(items):
            return None
        return "right" if items[item].has_right else "plain"

    return tag


def stage_stats(engine: PipelineEngine) -> dict:
    """This rank's contribution to the report (closes its timeline)."""
    stage = engine.runner.stage
    param_bytes = sum(p.numel() * p.element_size() for p in stage.parameters())
    tower = getattr(engine.runner, "tower", None)
    if tower is not None:  # the audio tower's own slice (meta tensors of other stages hold no memory)
        param_bytes += sum(p.numel() * p.element_size() for p in tower.parameters() if not p.is_meta)
    layers = engine.job.stage_layers[engine.rank]
    computed = dense = overhead = 0
    for proc in stage.processors:
        st = proc.backend.stats()
        computed, dense, overhead = computed + st.pairs_computed, dense + st.pairs_dense, overhead + st.overhead_flops
    attention = {
        "pairs_computed": computed,
        "pairs_dense": dense,
        "overhead_flops": overhead,
        "density": computed / dense if dense else 1.0,
    }
    device = engine.runner.device
    cuda_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return engine.timeline.to_dict(layers) | {
        "param_bytes": param_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_device_bytes": cuda_peak,
        "attention": attention,
    }


@dataclass
class RenderFacts:
    """What rank 0 has at the end of a render, for `build_report`."""

    cfg: EngineConfig
    job: JobLayout
    stages: list[dict]  # every rank's `stage_stats`, in rank order
    result: Stage0Result
    outputs: dict
    t_start: float
    device: torch.device
    dtype: torch.dtype
    phases: dict[str, float] = field(default_factory=dict)  # load_s, encode_s, render_s, group_s, close_s, ...
    samples_written: int | None = None
    resumed_from: int | None = None
    render_started_at: float = 0.0
    checkpoint: dict = field(default_factory=dict)


def versions() -> dict[str, str | None]:
    """dualpar, torch and diffusers versions (and CUDA's, when torch has it)."""
    import dualpar

    try:
        from importlib.metadata import version

        diffusers = version("diffusers")
    except Exception:  # noqa: BLE001 - diffusers is optional for the toy models
        diffusers = None
    return {
        "dualpar": dualpar.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers,
        "cuda": torch.version.cuda,
    }


def device_info(device: torch.device, dtype: torch.dtype) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": str(device), "name": name, "dtype": str(dtype).removeprefix("torch.")}


def message_bytes(job: JobLayout, dtype: torch.dtype, hidden: bool) -> int:
    """Bytes of one hidden-state (or returned velocity) message, for the performance model's transfer costs:
    the runner's own message layouts (`StageRunner.message_specs`), so the two never disagree."""
    if job.av is not None:
        from dualpar.av_runner import AVStageRunner as runner
    else:
        from dualpar.runner import StageRunner as runner
    specs = runner.message_specs(job, dtype)[0 if hidden else 1]
    return sum(math.prod(s.shape) * torch.finfo(s.dtype).bits // 8 for s in specs)


def build_report(facts: RenderFacts) -> dict:
    """The report dict: config, frame accounting, plan, phases, per-stage summaries, per-block times."""
    cfg, job, result, stages = facts.cfg, facts.job, facts.result, facts.stages
    geo = job.geometry
    render_s = facts.phases.get("render_s", 0.0)
    report = {
        "versions": versions(),
        "runtime": device_info(facts.device, facts.dtype),
        "config": cfg.to_dict(),
        "model": {
            "name": job.info.name,
            "path": str(job.info.path) if job.info.path else None,
            "layers": job.info.num_layers,
        },
        "frames": job.frames,
        "frames_written": result.frames,
        "blocks": geo.n_blocks,
        "latent_frames": geo.total_latents,
        "block_frame_starts": list(job.block_frame_starts),
        "plan": {
            "n_blocks": geo.n_blocks,
            "steps": job.plan.steps,
            "block_latents": geo.block_latents,
            "context_latents": geo.context_latents,
            "tokens_per_frame": job.tokens_per_frame,
            "stages": len(stages),
            "split": [[r.start, r.stop] for r in job.stage_layers],
            "iterations": len(job.plan.iterations),
            "passes": len(job.plan.items),
            "left_context": cfg.schedule.left_context,
            "cfg_split": cfg.parallel.cfg_split,
            "max_inflight": cfg.parallel.max_sends_in_flight,
            "head_wait": False,  # finished blocks retire when their last pass returns (no per-iteration drain)
            "decode_at": "retire",  # the simulator's policy; with output_worker=thread the work overlaps the passes
            "output_worker": cfg.output.worker,
            "checkpoint_every": cfg.checkpoint.every,
            "hidden_bytes": message_bytes(job, facts.dtype, hidden=True),
            "velocity_bytes": message_bytes(job, facts.dtype, hidden=False),
        },
        "threads_per_process": torch.get_num_threads(),
        "wall_s": time.time() - facts.t_start,
        "phases": {
            "denoise_s": render_s - result.output_wait_s,  # the pipeline thread's time not spent on output
            "decode_s": result.decode_s,  # decode + write, inline or on the output worker
            "output_wait_s": result.output_wait_s,
        }
        | facts.phases,
        "peak_rss_bytes": stages[0]["peak_rss_bytes"],
        "stages": stages,
        "per_block": [{"block": k, "decode_write_s": s} for k, s in enumerate(result.block_seconds)],
        "outputs": facts.outputs,
    }
    if job.av is not None:
        av = job.av
        report["audio"] = {
            "sample_rate": av.codec.sample_rate,
            "channels": av.codec.channels,
            "hop": av.codec.hop,
            "audio_per_latent": str(av.grid.audio_per_latent()),
            "aligned": av.grid.aligned,
            "slots": av.slots,
            "total_samples": av.total_samples,
            "samples_written": facts.samples_written,
        }
    report["restart"] = {
        "resumed_from_iteration": facts.resumed_from,
        "render_started_at": facts.render_started_at,
        "checkpoint": facts.checkpoint,
    }
    return report


def write_report(out_dir: Path, facts: RenderFacts) -> dict:
    """Build and write report.json; with `output.trace=true` merge the ranks' trace parts into trace.json."""
    report = build_report(facts)
    if facts.cfg.output.trace:
        missing = merge_trace_parts(out_dir, len(facts.stages), out_dir / "trace.json")
        report["trace"] = {"path": str(out_dir / "trace.json"), "missing_ranks": missing}
    write_json_atomic(out_dir / "report.json", report)
    return report
