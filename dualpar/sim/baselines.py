"""Published long-video parallel methods, each as a small cost function of the same inputs.

Each function takes the same model, job (resolution, frames, steps, P, C) and cluster as the dualpar
simulation and returns latency, per-GPU peak memory and idle fraction from the method's published cost
structure. They are deliberately coarse (closed forms, no event replay except DualParal-as-published,
which shares the replay); every assumption is listed in docs/results/simulated.md.

Shared conventions: full-sequence methods attend over all L = latents x tpf tokens (Wan's full 3D
attention); cond + uncond run as a batch of 2; the video is decoded once at the end on one GPU, holding all
frames (the reference implementations return the whole video); the text encoder is not kept resident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from dualpar.sim.cluster import ClusterSpec
from dualpar.sim.costs import flop_costs
from dualpar.sim.job import Job
from dualpar.sim.memory import DECODER_CACHE_BYTES_480P, PIXELS_480P
from dualpar.sim.model import ModelSpec
from dualpar.sim.simulate import simulate


@dataclass(frozen=True)
class BaselineResult:
    """One method's prediction."""

    method: str
    latency_s: float
    memory_per_gpu: float
    idle_fraction: float
    fits: bool
    notes: str = ""


def _tokens(job: Job, model: ModelSpec) -> tuple[int, int]:
    """(tpf, L): tokens per latent frame and full-sequence tokens for exactly the latents asked for."""
    tpf = model.tokens_per_frame(job.height, job.width)
    return tpf, job.latents_needed * tpf


def _pass_s(model: ModelSpec, cl: ClusterSpec, q: float, kv: float, batch: int = 2) -> float:
    """Seconds of one full-model forward over q query tokens attending to kv keys."""
    flops = model.num_layers * model.layer_flops(batch, int(q), int(kv))
    flops += model.embed_flops(batch, int(q)) + model.head_flops(batch, int(q))
    return flops / cl.device.flops_per_s


def _acts(model: ModelSpec, ab: int, q: float, kv: float, batch: int = 2) -> float:
    d, f = model.dim, model.ffn_dim
    return batch * ab * max(q * 5 * d + 2 * kv * d, q * (2 * d + 2 * f))


def _one_shot_decode(job: Job, model: ModelSpec, cl: ClusterSpec) -> tuple[float, float]:
    """(seconds, bytes) of decoding every latent at the end on one GPU, frames held (~3 copies)."""
    sec = flop_costs(job, model, cl).decode_s_per_latent * job.latents_needed
    pixels = job.height * job.width
    frames = 4 * (job.latents_needed - 1) + 1
    mem = 3 * frames * 3 * pixels * cl.dtype_bytes + DECODER_CACHE_BYTES_480P * pixels / PIXELS_480P
    return sec, mem + model.vae_params * cl.dtype_bytes


def _result(
    method: str,
    compute: float,
    exposed: float,
    decode: float,
    mem: float,
    cl: ClusterSpec,
    busy_share: float = 1.0,
    notes: str = "",
) -> BaselineResult:
    """Latency = compute + exposed comm + decode; idle = share of GPU-time not computing."""
    latency = compute + exposed + decode
    gpu_busy = busy_share * compute + decode / cl.gpus
    idle = 1.0 - gpu_busy / latency if latency > 0 else 0.0
    mem += cl.device.runtime_overhead_gb * 1024**3
    return BaselineResult(method, latency, mem, idle, mem <= cl.device.memory_bytes, notes)


def single_gpu(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """Original Wan on one GPU: full attention over the whole video, T steps."""
    _, L = _tokens(job, model)
    compute = job.steps * _pass_s(model, cl, L, L)
    dec_s, dec_mem = _one_shot_decode(job, model, cl)
    mem = model.total_params * cl.dtype_bytes + _acts(model, cl.dtype_bytes, L, L) + dec_mem
    res = _result("single_gpu", compute, 0.0, dec_s, mem, cl, notes="1 GPU; other GPUs unused")
    return replace(res, idle_fraction=0.0)


def ulysses(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """DeepSpeed-Ulysses: sequence split N ways, 4 all-to-alls per self-attention (q, k, v, out), not
    overlapped with compute; full model on every GPU."""
    n, ab = cl.gpus, cl.dtype_bytes
    _, L = _tokens(job, model)
    compute = job.steps * _pass_s(model, cl, L, L) / n
    a2a_bytes = 2 * (L / n) * model.dim * ab * (n - 1) / n
    comm = job.steps * model.num_layers * 4 * cl.link.transfer_s(a2a_bytes)
    dec_s, dec_mem = _one_shot_decode(job, model, cl)
    mem = model.total_params * ab + _acts(model, ab, L / n, L / n) + dec_mem
    note = (
        ""
        if model.heads % n == 0
        else f"{model.heads} heads % {n} != 0: needs USP (ulysses x ring) in practice"
    )
    return _result("ulysses", compute, comm, dec_s, mem, cl, notes=note)


def ring_attention(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """Ring attention: sequence split N ways; K/V blocks rotate N-1 times per layer, overlapped with the
    attention compute; full model on every GPU."""
    n, ab = cl.gpus, cl.dtype_bytes
    _, L = _tokens(job, model)
    compute = job.steps * _pass_s(model, cl, L, L) / n
    attn_s = job.steps * model.num_layers * 2 * 4 * (L / n) * L * model.dim / cl.device.flops_per_s
    rot = job.steps * model.num_layers * (n - 1) * cl.link.transfer_s(2 * 2 * (L / n) * model.dim * ab)
    exposed = max(0.0, rot - attn_s)
    dec_s, dec_mem = _one_shot_decode(job, model, cl)
    mem = model.total_params * ab + _acts(model, ab, L / n, 3 * L / n) + dec_mem
    return _result("ring_attention", compute, exposed, dec_s, mem, cl)


def video_infinity(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """Video-Infinity clip parallelism: each GPU denoises L/N tokens attending to its clip plus C latents
    of context from each neighbour and C latents of global context; context K/V is exchanged every layer,
    not overlapped; all GPUs step synchronously; full model on every GPU."""
    n, ab = cl.gpus, cl.dtype_bytes
    tpf, L = _tokens(job, model)
    ctx = 3 * job.context_latents * tpf
    compute = job.steps * _pass_s(model, cl, L / n, L / n + ctx)
    exch = 2 * cl.link.transfer_s(2 * 2 * job.context_latents * tpf * model.dim * ab)
    comm = job.steps * model.num_layers * exch
    dec_s, dec_mem = _one_shot_decode(job, model, cl)
    mem = model.total_params * ab + _acts(model, ab, L / n, L / n + ctx) + dec_mem
    note = f"{job.latents_needed / n:.0f} latents per GPU (Wan was trained on 21)"
    return _result("video_infinity", compute, comm, dec_s, mem, cl, notes=note)


def fifo_diffusion(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """FIFO-Diffusion with latent partitioning: a queue of T latent frames at T noise levels; every
    dequeue runs ceil(T/f) windows of the model's native f frames; the windows of one dequeue run in
    parallel on min(N, T/f) GPUs (full model each), then the queue is gathered."""
    n, ab = cl.gpus, cl.dtype_bytes
    tpf, _ = _tokens(job, model)
    f = min(model.trained_latents, job.steps)
    parts = math.ceil(job.steps / f)
    window = _pass_s(model, cl, f * tpf, f * tpf)
    dequeues = job.latents_needed + job.steps
    rounds = math.ceil(parts / n)
    compute = dequeues * rounds * window
    gather = dequeues * cl.link.transfer_s(job.steps * model.in_channels * tpf * 4 * 4 / n) if n > 1 else 0.0
    dec_s, dec_mem = _one_shot_decode(job, model, cl)
    mem = model.total_params * ab + _acts(model, ab, f * tpf, f * tpf) + dec_mem
    share = parts / (n * rounds)
    return _result(
        "fifo_diffusion",
        compute,
        gather,
        dec_s,
        mem,
        cl,
        busy_share=share,
        notes=f"window f={f}, {parts} partitions on {min(n, parts)} of {n} GPUs",
    )


def pipefusion(model: ModelSpec, job: Job, cl: ClusterSpec, patches: int | None = None) -> BaselineResult:
    """PipeFusion: layers split N ways, the sequence cut into M patches pipelined through the stages;
    attention uses fresh K/V of the current patch and stale K/V (previous step) for the rest, so every
    stage keeps the full-sequence K/V of its layers; the pipeline runs across steps (one fill/drain)."""
    n, ab = cl.gpus, cl.dtype_bytes
    m = patches or n
    _, L = _tokens(job, model)
    step = _pass_s(model, cl, L, L)
    compute = job.steps * step / n
    bubble = (n - 1) / m * step / n
    dec_s, dec_mem = _one_shot_decode(job, model, cl)
    layers = math.ceil(model.num_layers / n)
    kv = 2 * L * model.dim * layers * 2 * ab
    mem = model.total_params * ab / n + kv + _acts(model, ab, L / m, L) + dec_mem
    return _result("pipefusion", compute, bubble, dec_s, mem, cl, notes=f"M={m} patches; stale K/V buffer")


def published_split(num_layers: int, stages: int) -> tuple[int, ...]:
    """The public code's split: L // N each, the remainder to the first stages."""
    base, extra = divmod(num_layers, stages)
    return tuple(base + (1 if j < extra else 0) for j in range(stages))


def dualparal_published(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """DualParal's public code: the same block pipeline, but the text encoder and VAE on every GPU, the
    remainder layers on the first stages, and the whole video decoded at the end on rank 0."""
    pub = replace(job, split=published_split(model.num_layers, job.stages), decode_at="end")
    r = simulate(pub, model, cl, published=True)
    return BaselineResult(
        "dualparal_published",
        r.latency_s,
        r.peak_memory,
        r.pipeline.mean_idle_fraction(),
        r.fits,
        "host RAM: every rank loads the full pipeline",
    )


def dualpar(model: ModelSpec, job: Job, cl: ClusterSpec) -> BaselineResult:
    """This project: streaming decode on stage 0, text encoder freed after encoding."""
    r = simulate(job, model, cl)
    return BaselineResult(
        "dualpar",
        r.latency_s,
        r.peak_memory,
        r.pipeline.mean_idle_fraction(),
        r.fits,
        f"split {[len(x) for x in r.ranges]}",
    )


METHODS = {
    "dualpar": dualpar,
    "dualparal_published": dualparal_published,
    "ulysses": ulysses,
    "ring_attention": ring_attention,
    "video_infinity": video_infinity,
    "fifo_diffusion": fifo_diffusion,
    "pipefusion": pipefusion,
    "single_gpu": single_gpu,
}


def compare(model: ModelSpec, job: Job, cl: ClusterSpec) -> list[BaselineResult]:
    """Every method on the same inputs."""
    return [fn(model, job, cl) for fn in METHODS.values()]
