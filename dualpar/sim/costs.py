"""How long each piece of work takes: the simulator's cost model.

Durations come either from the FLOP model (model shape x device throughput x an efficiency factor) or from
a calibration table measured on a real run (`dualpar.sim.calibrate`). Either way the pipeline replay only
sees a `CostModel`: seconds per layer-pass (with and without right-context keys), per-pass fixed work on
every stage (conditioning), on stage 0 (embedding) and on the last stage (head, guidance), the stage-0
scheduler step and VAE decode, one hop's transfer time and the stage's own time per message sent or
received. The cost-aware layer split is derived from the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpar.plan_split import split_layers
from dualpar.sim.cluster import ClusterSpec
from dualpar.sim.job import Job, geometry
from dualpar.sim.model import ModelSpec


@dataclass(frozen=True)
class CostModel:
    """Seconds for every kind of work the engine does, per micro-batch unless stated."""

    layer_s: float
    layer_right_s: float
    embed_s: float
    head_s: float
    guidance_s: float
    scheduler_s: float
    decode_s_per_latent: float
    encode_s: float
    hidden_msg_s: float
    velocity_msg_s: float
    send_cpu_s: float = 0.0  # the sending stage's own time per message (CPU hosts: gloo calls and copies)
    recv_cpu_s: float = 0.0  # the receiving stage's own time per message
    stage_s: float = 0.0  # every stage's own fixed work per micro-batch (its conditioning embeddings)

    def stage_overheads(self, stages: int, items: int, decoded_latents: int, halves: int) -> list[float]:
        """Each stage's fixed extra work per micro-batch, in seconds (for the cost-aware split)."""
        units = max(1, items * halves)
        first = self.embed_s + (self.scheduler_s * items + self.decode_s_per_latent * decoded_latents) / units
        last = self.head_s + self.guidance_s * items / units
        extra = [self.stage_s] * stages
        extra[0] += first
        extra[-1] += last
        return extra


def flop_costs(job: Job, model: ModelSpec, cluster: ClusterSpec) -> CostModel:
    """Costs from FLOPs: every GEMM/attention FLOP at the device's sustained rate."""
    geo = geometry(job, model, cluster.dtype_bytes)
    rate = cluster.device.flops_per_s / cluster.compute_slowdown(job.stages)
    b = job.batch
    guidance_bytes = 3 * model.out_channels * job.window_latents * geo.latent_hw * 4
    pixels_per_latent = 4 * job.height * job.width
    vae_rate = cluster.device.peak_tflops * 1e12 * cluster.device.vae_efficiency
    return CostModel(
        layer_s=model.layer_flops(b, geo.q_tokens, geo.q_tokens) / rate,
        layer_right_s=model.layer_flops(b, geo.q_tokens, geo.kv_tokens_right) / rate,
        embed_s=model.embed_flops(b, geo.q_tokens) / rate,
        head_s=model.head_flops(b, geo.q_tokens) / rate,
        guidance_s=guidance_bytes / (cluster.device.mem_bandwidth_gbs * 1e9) if job.guidance else 0.0,
        scheduler_s=cluster.scheduler_s,
        decode_s_per_latent=model.decode_flops_per_pixel * pixels_per_latent / vae_rate,
        encode_s=model.text_encode_flops() / (encode_rate(job, cluster)),
        hidden_msg_s=cluster.link.transfer_s(geo.hidden_msg_bytes) if job.stages > 1 else 0.0,
        velocity_msg_s=cluster.link.transfer_s(geo.velocity_msg_bytes) if job.stages > 1 else 0.0,
        send_cpu_s=cluster.link.send_cpu_us * 1e-6 if job.stages > 1 else 0.0,
        recv_cpu_s=cluster.link.recv_cpu_us * 1e-6 if job.stages > 1 else 0.0,
    )


def encode_rate(job: Job, cluster: ClusterSpec) -> float:
    """FLOP/s of the text encoder: on the device, or on the host CPU when kept off the GPUs."""
    return cluster.device.flops_per_s if job.text_encoder_on_device else cluster.host_tflops * 1e12


def layer_ranges(job: Job, num_layers: int, costs: CostModel) -> list[range]:
    """The job's layer split: explicit counts, even, or cost-aware from `costs`."""
    if not isinstance(job.split, str):
        return split_layers(num_layers, job.stages, split=list(job.split))
    if job.split == "even" or job.stages == 1:
        return split_layers(num_layers, job.stages)
    per_layer = max(1e-12, 0.5 * (costs.layer_s + costs.layer_right_s))
    items = job.n_blocks * job.steps
    extra = costs.stage_overheads(job.stages, items, job.total_latents, job.halves)
    return split_layers(num_layers, job.stages, costs=[e / per_layer for e in extra])
