"""One call from a job to predicted latency, idle fractions and memory.

Ties the pieces together: geometry and costs (FLOP model or a calibration), the layer split, the pipeline
replay over the engine's plan, and the memory model. `SimResult.summary()` is the flat record that the CLI,
the sweeps and docs/results use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dualpar.sim.cluster import GIB, ClusterSpec
from dualpar.sim.costs import CostModel, flop_costs, layer_ranges
from dualpar.sim.job import Geometry, Job, geometry
from dualpar.sim.memory import StageMemory, stage_memory
from dualpar.sim.model import ModelSpec
from dualpar.sim.pipeline import PipelineConfig, PipelineResult, run_pipeline


@dataclass(frozen=True)
class SimResult:
    """Predicted latency (text encode + denoise with interleaved decode), per-stage idle and memory."""

    job: Job
    model: str
    cluster: str
    ranges: tuple[range, ...]
    costs: CostModel
    pipeline: PipelineResult
    memory: tuple[StageMemory, ...]
    memory_limit: float
    geometry: Geometry

    @property
    def latency_s(self) -> float:
        return self.costs.encode_s + self.pipeline.makespan_s

    @property
    def peak_memory(self) -> float:
        return max(m.total for m in self.memory)

    @property
    def fits(self) -> bool:
        return self.peak_memory <= self.memory_limit

    def summary(self) -> dict[str, Any]:
        idle = self.pipeline.idle_fractions()
        return {
            "model": self.model,
            "cluster": self.cluster,
            "stages": self.job.stages,
            "block_latents": self.job.block_latents,
            "context_latents": self.job.context_latents,
            "cfg_split": self.job.cfg_split,
            "split": [len(r) for r in self.ranges],
            "n_blocks": self.job.n_blocks,
            "latency_s": round(self.latency_s, 3),
            "idle_fraction_mean": round(sum(idle) / len(idle), 4),
            "idle_fraction": [round(x, 4) for x in idle],
            "peak_memory_gib": round(self.peak_memory / GIB, 3),
            "memory_gib": [round(m.total / GIB, 3) for m in self.memory],
            "fits": self.fits,
        }


def pipeline_config(job: Job, record: bool = True) -> PipelineConfig:
    return PipelineConfig(
        halves=job.halves,
        left_context=job.left_context,
        max_inflight=job.max_inflight,
        decode_at=job.decode_at,
        head_wait=job.head_wait,
        checkpoint_every=job.checkpoint_every,
        block_latents=job.block_latents,
        context_latents=job.context_latents,
        record=record,
    )


def simulate(
    job: Job,
    model: ModelSpec,
    cluster: ClusterSpec,
    costs: CostModel | None = None,
    record: bool = False,
    published: bool = False,
) -> SimResult:
    """Predict one job. `costs` overrides the FLOP model (e.g. from calibration)."""
    if job.stages > cluster.gpus:
        raise ValueError(f"parallel.stages={job.stages} exceeds the cluster's {cluster.gpus} devices")
    costs = costs if costs is not None else flop_costs(job, model, cluster)
    ranges = layer_ranges(job, model.num_layers, costs)
    result = run_pipeline(job.plan(), ranges, costs, pipeline_config(job, record))
    memory = stage_memory(job, model, cluster, ranges, published=published)
    return SimResult(
        job=job,
        model=model.name,
        cluster=cluster.name,
        ranges=tuple(ranges),
        costs=costs,
        pipeline=result,
        memory=tuple(memory),
        memory_limit=cluster.device.memory_bytes,
        geometry=geometry(job, model, cluster.dtype_bytes),
    )
