"""The job's plan, explained before any weights load: layers per stage, blocks in flight, idle estimate,
per-stage memory. `plan_only=true` prints it and exits; impossible plans were already rejected by validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dualpar.job import JobLayout
from dualpar.models.loader import pick_device, pick_dtype
from dualpar.schedule.blockwise import idle_fraction_estimate
from dualpar.threads import choose_threads


@dataclass(frozen=True)
class StageEstimate:
    """One stage's peak memory by kind. Weights stay for the run; the text encoder (stage 0, encode phase,
    unless model.text_encoder_device=cpu) runs and is freed before the stage's layers are materialised
    (dualpar.launch.worker), so the peak is the larger of the encoder alone and the weights plus denoising.
    The terms come from dualpar.sim.memory, the performance model's memory model."""

    stage: int
    layers: range
    param_bytes: int
    activation_bytes: int
    cache_bytes: int
    decoder_bytes: int = 0  # stage 0: VAE weights, causal decoder cache, one chunk's working set
    text_encoder_bytes: int = 0  # stage 0 while it encodes
    receive_bytes: int = 0  # pre-posted receive buffers

    @property
    def denoise_bytes(self) -> int:
        return self.activation_bytes + self.cache_bytes + self.decoder_bytes + self.receive_bytes

    @property
    def total_bytes(self) -> int:
        return max(self.text_encoder_bytes, self.param_bytes + self.denoise_bytes)


def _param_counts(job: JobLayout) -> tuple[int, int, int, int]:
    """(per-layer, shared-conditions, first-only, last-only) parameter counts, from the config on meta, for all
    experts together (Wan2.2 A14B: every stage holds its slice of both). SkyReels-V2 diffusion forcing counts its
    own class: its fps embedding and projection are conditioning, held on every stage."""
    from diffusers import SkyReelsV2Transformer3DModel, WanTransformer3DModel

    cls = SkyReelsV2Transformer3DModel if job.info.diffusion_forcing else WanTransformer3DModel
    with torch.device("meta"):
        model = cls.from_config(job.info.transformer)

    def count(m) -> int:
        return sum(p.numel() for p in m.parameters())

    last = count(model.norm_out) + count(model.proj_out) + model.scale_shift_table.numel()
    shared = count(model.condition_embedder)
    if job.info.diffusion_forcing and getattr(model, "fps_projection", None) is not None:
        shared += count(model.fps_embedding) + count(model.fps_projection)
    counts = count(model.blocks[0]), shared, count(model.patch_embedding), last
    e = job.info.num_experts
    return counts[0] * e, counts[1] * e, counts[2] * e, counts[3] * e


def _audio_param_counts(job: JobLayout) -> tuple[list[int], int, int, int, int]:
    """The audio tower's (per-layer incl. fusion, shared, first-only, last-only) parameter counts and width."""
    from dualpar.av.branch import AudioTower
    from dualpar.av_runner import audio_branch_config

    with torch.device("meta"):
        tower = AudioTower(audio_branch_config(job))

    def count(m) -> int:
        return sum(p.numel() for p in m.parameters())

    layers = [
        count(tower.blocks[i]) + (count(tower.fusion_for(i)) if tower.fusion_for(i) else 0)
        for i in range(len(tower.blocks))
    ]
    last = count(tower.proj_out) + tower.scale_shift_table.numel()
    return layers, count(tower.condition_embedder), count(tower.patch_embedding), last, tower.config.dim


def estimate_stages(job: JobLayout) -> list[StageEstimate]:
    device = pick_device(job.cfg.model.device)
    elem = torch.finfo(pick_dtype(job.cfg.model.dtype, device)).bits // 8
    per_layer, shared, first, last = _param_counts(job)
    audio = _audio_param_counts(job) if job.av is not None else None
    geo = job.geometry
    tokens = geo.window_latents * job.tokens_per_frame
    width = job.info.hidden_dim
    batch = len(job.branches)
    in_flight = min(job.plan.max_in_flight, len(job.stage_layers))
    out = []
    for j, layers in enumerate(job.stage_layers):
        params = (
            per_layer * len(layers)
            + shared
            + (first if j == 0 else 0)
            + (last if j == len(job.stage_layers) - 1 else 0)
        )
        # hidden states of the passes buffered on this stage plus one pass's working set (about 8 widths per token)
        act = batch * tokens * width * elem * (in_flight + 8)
        if job.info.diffusion_forcing:  # per-token conditioning held for the pass (temb, 6 modulations) and
            act += batch * tokens * width * (7 * elem + 6 * 4)  # each block's float32 modulation table
        cache = 2 * batch * geo.context_latents * job.tokens_per_frame * width * elem * len(layers)
        cache *= job.info.num_experts  # each expert's attention layers keep their own last capture
        if audio is not None and job.av is not None:  # the audio tower's slice and its tokens
            a_layers, a_shared, a_first, a_last, a_width = audio
            params += sum(a_layers[i] for i in layers) + a_shared
            params += (a_first if j == 0 else 0) + (a_last if j == len(job.stage_layers) - 1 else 0)
            act += batch * job.av.slots * a_width * elem * (in_flight + 8)
            stored = len(job.av.window(min(1, geo.n_blocks - 1)).store_audio)
            cache += 2 * batch * stored * a_width * elem * len(layers) * 3  # audio self, a2v, v2a
        out.append(StageEstimate(j, layers, params * elem, act, cache, *_stage_extras(job, j, elem, batch * tokens)))
    return out


def _stage_extras(job: JobLayout, stage: int, elem: int, rows_tokens: int) -> tuple[int, int, int]:
    """(decoder, text encoder, receive buffers) bytes of `stage`, by dualpar.sim.memory's terms."""
    from dualpar.sim.memory import receive_buffer_bytes, streaming_decoder_bytes
    from dualpar.sim.model import from_model_info

    geo, cfg = job.geometry, job.cfg
    h, w = job.latent_hw
    hidden = rows_tokens * job.info.hidden_dim * elem
    velocity = int(job.info.transformer["out_channels"]) * geo.window_latents * h * w * 4
    recv = receive_buffer_bytes(stage, len(job.stage_layers), hidden, velocity, job.plan.max_in_flight)
    if stage != 0:
        return 0, 0, int(recv)
    spec = from_model_info(job.info)
    decoder = streaming_decoder_bytes(cfg.height, cfg.width, spec.vae_params, elem) if cfg.output.video else 0.0
    text = 0.0 if cfg.model.text_encoder_device == "cpu" else spec.text_encoder_params * elem
    return int(decoder), int(text), int(recv)


def plan_warnings(job: JobLayout) -> list[str]:
    stages = len(job.stage_layers)
    warnings = []
    if job.plan.max_in_flight < stages:
        warnings.append(
            f"only {job.plan.max_in_flight} blocks are in flight for {stages} stages: stages will idle; "
            "use fewer stages, more steps, or a longer video (more blocks)"
        )
    return warnings


def describe_plan(job: JobLayout) -> str:
    geo, plan = job.geometry, job.plan
    stages = len(job.stage_layers)
    idle = idle_fraction_estimate(stages, plan.steps, geo.n_blocks)
    lines = [
        f"dualpar plan: model={job.info.name} ({job.info.num_layers} layers) {job.cfg.width}x{job.cfg.height}, "
        f"{job.frames} frames",
        f"  blocks: n={geo.n_blocks} (P={geo.block_latents}, C={geo.context_latents}, "
        f"{geo.total_latents} latent frames), steps T={plan.steps}, iterations {len(plan.iterations)}, "
        f"passes {len(plan.items)}",
        f"  window: {geo.window_latents} latent frames x {job.tokens_per_frame} tokens/frame, "
        f"batch {len(job.branches)} ({'+'.join(job.branches)})",
        f"  stages: {stages}, blocks in flight: {plan.max_in_flight}, pipeline bubble {idle:.3f} (the schedule's "
        "fill and drain alone; with cluster=<preset> the performance model adds costs)",
        f"  threads: {choose_threads(job.cfg).describe()}",
    ]
    if job.av is not None:
        av = job.av
        a = av.grid.audio_per_latent()
        lines.append(
            f"  audio: codec {av.audio.codec} ({av.codec.sample_rate} Hz, hop {av.codec.hop}, "
            f"{av.codec.channels} ch), A={a} audio latents per video latent "
            f"({'aligned' if av.grid.aligned else 'padded'}), {av.slots} audio tokens per window, "
            f"width x{av.audio.width_ratio}, fusion every {av.audio.fusion_every} layer(s), "
            f"{av.total_samples} samples"
        )
    for est in estimate_stages(job):
        lines.append(
            f"  stage {est.stage}: layers {est.layers.start}..{est.layers.stop - 1} "
            f"({len(est.layers)}), memory ~{est.total_bytes / 2**20:.1f} MiB "
            f"(weights {est.param_bytes / 2**20:.1f}, activations {est.activation_bytes / 2**20:.1f}, "
            f"feature cache {est.cache_bytes / 2**20:.1f}, decoder {est.decoder_bytes / 2**20:.1f}, "
            f"receive buffers {est.receive_bytes / 2**20:.1f}; text encoder {est.text_encoder_bytes / 2**20:.1f} "
            "alone, freed before the layers load)"
        )
    lines += [f"  warning: {w}" for w in plan_warnings(job)]
    return "\n".join(lines)


def describe_cluster_estimate(job: JobLayout) -> str:
    """The performance model's prediction for this job on `cluster=<preset>`, and the layout it suggests as
    overrides that can be pasted onto the same command."""
    from dualpar.sim.cluster import cluster_from_dict
    from dualpar.sim.explore import suggest
    from dualpar.sim.model import from_model_info
    from dualpar.sim.simulate import simulate

    cfg = job.cfg
    cluster = cluster_from_dict(dict(cfg.cluster))
    model = from_model_info(job.info)  # the model's own text encoder and VAE, not Wan's by default
    sim_job = sim_job_of(job)
    lines = [f"  estimate on {cluster.name} ({cluster.gpus} x {cluster.device.name}), performance model:"]
    if sim_job.stages > cluster.gpus:
        lines.append(f"    parallel.stages={sim_job.stages} exceeds the cluster's {cluster.gpus} devices")
    else:
        r = simulate(sim_job, model, cluster).summary()
        lines.append(
            f"    latency {r['latency_s']:.1f} s; idle {r['idle_fraction_mean']:.3f} (mean fraction of the render "
            "each stage waits: pipeline fill and drain, uneven stages, messages, stage 0's decoding); "
            f"peak memory per device {r['peak_memory_gib']:.2f} GiB"
        )
    s = suggest(sim_job, cluster, model, stages=range(1, cluster.gpus + 1))
    lines.append(
        f"    suggestion: {' '.join(suggested_overrides(s))}  -> {s.latency_s:.1f} s, {s.peak_memory_gib:.2f} GiB "
        f"per device{'' if s.fits else ' (does not fit)'}"
    )
    if s.stages > 1:
        lines.append("      (several nodes: torchrun --nproc-per-node <per node> -m dualpar ... launcher=torchrun)")
    return "\n".join(lines)


def sim_job_of(job: JobLayout):
    """This job as the performance model's Job."""
    from dualpar.sim.job import Job

    cfg, geo = job.cfg, job.geometry
    split = tuple(len(r) for r in job.stage_layers) if cfg.parallel.split else cfg.parallel.split_mode
    return Job(
        height=cfg.height,
        width=cfg.width,
        frames=cfg.frames,
        steps=job.plan.steps,
        block_latents=geo.block_latents,
        context_latents=geo.context_latents,
        left_context=cfg.schedule.left_context,
        stages=cfg.parallel.stages,
        split=split,
        cfg_split=cfg.parallel.cfg_split,
        guidance=job.use_cfg,
        max_inflight=cfg.parallel.max_sends_in_flight,
        checkpoint_every=cfg.checkpoint.every,
    )


def suggested_overrides(s) -> list[str]:
    """A `dualpar.sim.explore.Suggestion` as key=value overrides, including the launcher several stages need."""
    out = [f"parallel.stages={s.stages}"]
    if s.stages > 1:
        out.append("launcher=spawn")
    out += [f"schedule.block_latents={s.block_latents}", f"schedule.context_latents={s.context_latents}"]
    if s.stages > 1:
        split = str(s.split)
        out.append(f"parallel.split_mode={split}" if split in ("even", "cost_aware") else f"parallel.split=[{split}]")
    out.append(f"parallel.cfg_split={str(s.cfg_split).lower()}")
    return out
