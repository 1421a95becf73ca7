"""Per-stage peak memory of a pipeline layout.

The contract says a stage holds its weight shard, its in-flight windows and its feature cache, and stage 0
adds the streaming decoder: nothing grows with video length. This module puts numbers on each term so the
planner can check a layout against device memory, and so the published DualParal layout (text encoder and
VAE on every GPU, the whole video decoded in one shot at the end) can be compared on the same terms.

Working activations are the peak of one layer-pass: the attention phase holds x, norm(x), q, k, v (k and v
extended by the cached right-context keys) and the output; the FFN phase holds x, norm(x) and two
[tokens, ffn] tensors. Flash/SDPA attention is assumed (no [Lq, Lk] score matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dualpar.sim.cluster import GIB, ClusterSpec
from dualpar.sim.job import Job, geometry
from dualpar.sim.model import ModelSpec

# Wan VAE decoder cache measured with diffusers: 1.8 GiB at 480x832 in bf16; scales with pixels.
DECODER_CACHE_BYTES_480P = 1.8 * GIB
PIXELS_480P = 480 * 832
# Peak decoder working set per latent chunk: ~3 tensors of 96 channels x 4 frames at full resolution.
DECODE_WORK_CHANNELS = 96 * 3
# UniPC keeps latents, the model output history (order 2) and the noise per block in flight.
LATENT_COPIES = 4
# Receives a later stage keeps posted for hidden states (TorchP2PTransport's default `prepost`).
PREPOST = 2


@dataclass(frozen=True)
class StageMemory:
    """Bytes held by one stage, by kind. Weights and runtime stay for the whole run; the text encoder
    (encode phase), the denoise working set and the one-shot video (published code, end) come and go,
    so the peak is resident + the largest phase."""

    stage: int
    weights: float
    inflight: float
    activations: float
    feature_cache: float
    decoder: float
    text_encoder: float
    latents: float
    video: float
    runtime: float

    @property
    def denoise_phase(self) -> float:
        return self.inflight + self.activations + self.feature_cache + self.decoder + self.latents

    @property
    def total(self) -> float:
        return self.weights + self.runtime + max(self.text_encoder, self.denoise_phase, self.video)

    def as_gib(self) -> dict[str, float]:
        out = {f.name: round(getattr(self, f.name) / GIB, 3) for f in fields(self) if f.name != "stage"}
        out["total"] = round(self.total / GIB, 3)
        return out


def decoder_bytes(job: Job, model: ModelSpec, dtype_bytes: int) -> float:
    """VAE weights + causal decoder cache + one chunk's working set (streaming decode)."""
    return streaming_decoder_bytes(job.height, job.width, model.vae_params, dtype_bytes)


def streaming_decoder_bytes(height: int, width: int, vae_params: float, dtype_bytes: int) -> float:
    """Stage 0's VAE: weights, causal decoder cache and one latent chunk's working set, at height x width."""
    pixels = height * width
    cache = DECODER_CACHE_BYTES_480P * pixels / PIXELS_480P * dtype_bytes / 2
    work = DECODE_WORK_CHANNELS * 4 * pixels * dtype_bytes
    return vae_params * dtype_bytes + cache + work


def receive_buffer_bytes(
    stage: int, stages: int, hidden_msg_bytes: float, velocity_msg_bytes: float, blocks_in_flight: int
) -> float:
    """Pre-posted receive buffers (dualpar.transport): stage 0 posts 2 x blocks-in-flight + 2 receives for
    the returned outputs (`PipelineEngine.expect_outputs`), every later stage `PREPOST` for hidden states."""
    if stages <= 1:
        return 0.0
    if stage == 0:
        return (2 * blocks_in_flight + 2) * velocity_msg_bytes
    return PREPOST * hidden_msg_bytes


def working_activations(job: Job, model: ModelSpec, dtype_bytes: int) -> float:
    """Peak of one layer-pass for one micro-batch (see the module docstring)."""
    geo = geometry(job, model, dtype_bytes)
    d, f, q = model.dim, model.ffn_dim, geo.q_tokens
    attn = q * 5 * d + 2 * geo.kv_tokens_right * d
    ffn = q * (2 * d + 2 * f)
    return job.batch * max(attn, ffn) * dtype_bytes


def stage_memory(
    job: Job,
    model: ModelSpec,
    cluster: ClusterSpec,
    ranges: list[range],
    published: bool = False,
) -> list[StageMemory]:
    """Peak bytes per stage. `published=True` models the public DualParal code's placement."""
    ab = cluster.dtype_bytes
    geo = geometry(job, model, ab)
    n = len(ranges)
    k = job.max_inflight
    in_flight_blocks = min(job.n_blocks, job.steps)
    cfg_batch = 2 if job.guidance else 1
    out = []
    for j, layers in enumerate(ranges):
        first, last = j == 0, j == n - 1
        weights = len(layers) * model.layer_params * ab * model.experts  # every expert's slice (Wan2.2 A14B)
        weights += model.embed_params * ab * model.experts if first else 0.0
        weights += model.head_params * ab * model.experts if last else 0.0
        # sends in flight to the next stage, and the receives posted ahead of time
        inflight = k * geo.hidden_msg_bytes if not last else 0.0
        inflight += receive_buffer_bytes(j, n, geo.hidden_msg_bytes, geo.velocity_msg_bytes, in_flight_blocks)
        cache = 2 * geo.right_tokens * model.dim * len(layers) * cfg_batch * ab * model.experts  # one per expert
        latent_block = job.window_latents * model.in_channels * geo.latent_hw * 4
        latents = LATENT_COPIES * in_flight_blocks * latent_block if first else 0.0
        latents += 2 * model.text_tokens * model.text_dim * ab if first else 0.0
        decoder, video = (decoder_bytes(job, model, ab) if first else 0.0), 0.0
        on_device = first and job.text_encoder_on_device
        text = model.text_encoder_params * ab if on_device else 0.0  # encoded once on stage 0, then freed
        if job.text_encoder_resident and first:
            weights, text = weights + text, 0.0
        if published:
            weights, decoder, video, text = _published_extras(job, model, ab, first, weights)
        out.append(
            StageMemory(
                stage=j,
                weights=weights,
                inflight=inflight,
                activations=working_activations(job, model, ab),
                feature_cache=cache,
                decoder=decoder,
                text_encoder=text,
                latents=latents,
                video=video,
                runtime=cluster.device.runtime_overhead_gb * GIB,
            )
        )
    return out


def _published_extras(
    job: Job, model: ModelSpec, ab: int, first: bool, weights: float
) -> tuple[float, float, float, float]:
    """Public DualParal: every rank loads the whole pipeline and moves it to its GPU, encodes the prompt
    there and then deletes the text encoder; the VAE stays on every GPU. Rank 0 concatenates every
    finished block's latents and decodes the whole video at the end (`vae.decode` concatenates frames and
    clamps: ~3 copies of the frames at the output resolution). Returns weights, decoder, video, text."""
    weights += model.vae_params * ab
    text = model.text_encoder_params * ab
    if not first:
        return weights, 0.0, 0.0, text
    pixels = job.height * job.width
    cache = DECODER_CACHE_BYTES_480P * pixels / PIXELS_480P * ab / 2
    frames = 4 * (job.total_latents - 1) + 1
    all_latents = job.total_latents * model.in_channels * (job.height // 8) * (job.width // 8) * ab
    video = 3 * frames * 3 * pixels * ab + cache + all_latents
    return weights, 0.0, video, text
