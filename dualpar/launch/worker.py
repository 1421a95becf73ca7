"""`worker_main`: what every rank runs, under the local, spawn, torchrun and Ray launchers alike.

It rebuilds the job layout from the config (no communication needed), loads only this rank's layer shard,
has rank 0 encode the prompts once and broadcast them, runs the engine, and gathers every rank's timeline
into rank 0's report.json. Restarts: rank 0 decides whether the job resumes (dualpar.checkpoint) and broadcasts
the iteration every rank starts at; only rank 0 holds restart state.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from dualpar.attention.factory import attention_factory
from dualpar.block_queue import BlockQueue
from dualpar.checkpoint import (
    CheckpointRef,
    FaultInjector,
    Stage0Checkpointer,
    StopRequest,
    checkpoint_dir,
    clear_checkpoints,
    load_state,
    resume_from,
)
from dualpar.config import EngineConfig
from dualpar.engine import IterationHooks, PipelineEngine, Stage0Result
from dualpar.job import JobLayout
from dualpar.models.loader import (
    build_stage,
    load_codec,
    load_prompt_encoder,
    load_scheduler,
    pick_device,
    pick_dtype,
)
from dualpar.models.registry import read_model_info
from dualpar.output import OutputWriter
from dualpar.progress import Progress
from dualpar.report import RenderFacts, right_context_tag, stage_stats, write_report
from dualpar.runner import StageRunner
from dualpar.schedule.noise import CoordinatedNoise
from dualpar.threads import apply_threads
from dualpar.timeline import Timeline, clock_for, trace_part
from dualpar.topology import WorkerContext
from dualpar.transport.torch_p2p import TorchP2PTransport
from dualpar.validate import OUTPUT_FILES, resolve_config


def _init_group(ctx: WorkerContext, cfg: EngineConfig, device: torch.device) -> TorchP2PTransport | None:
    if ctx.world_size == 1:
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=cfg.parallel.timeout_s)
    if not dist.is_initialized():
        store = _torchrun_attempt_store(timeout) if ctx.init_method == "env://" else None
        dist.init_process_group(
            backend,
            init_method=None if store is not None else ctx.init_method,
            store=store,
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=timeout,
        )
    return TorchP2PTransport(
        ctx.rank, cfg.parallel.timeout_s, cfg.parallel.max_sends_in_flight, device=device
    )


def _torchrun_attempt_store(timeout: timedelta):
    """torchrun (`--max-restarts`) keeps one shared rendezvous TCPStore across restarts, and the process group's
    keys carry no attempt number: a restarted rank could read the dead group's gloo addresses and wait forever to
    connect. Each attempt gets its own key space. None when torchrun does not share its store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"dualpar/attempt_{attempt}/", store)


def _text_embeds(job: JobLayout, ctx: WorkerContext, transport, device: torch.device) -> torch.Tensor:
    """Rank 0 encodes every distinct prompt once; the others receive the embeddings."""
    comm_device = device if device.type == "cuda" else torch.device("cpu")
    if ctx.rank == 0:
        encoder = load_prompt_encoder(job.info, device)
        embeds = encoder.encode(list(job.texts)).float().to(comm_device)
        del encoder
    if transport is None:
        return embeds
    shape = torch.tensor(
        list(embeds.shape) if ctx.rank == 0 else [0, 0, 0], dtype=torch.int64, device=comm_device
    )
    transport.broadcast(shape, 0)
    if ctx.rank != 0:
        embeds = torch.empty(tuple(int(s) for s in shape.tolist()), dtype=torch.float32, device=comm_device)
    return transport.broadcast(embeds, 0)


def _prepare_output_dir(cfg: EngineConfig, resuming: bool) -> Path:
    out = Path(cfg.output.dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.output.overwrite and not resuming:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "video.parts", ignore_errors=True)
    return out


def worker_main(ctx: WorkerContext, cfg: EngineConfig) -> dict:
    """Run this rank's part of the job; rank 0 returns (and writes) the report."""
    t_start = time.time()
    apply_threads(cfg)  # one share of the node's cores per process (dualpar.threads)
    info = read_model_info(cfg.model.name, cfg.model.path, cfg.model.init_seed)
    cfg = resolve_config(cfg, info)
    job = JobLayout(cfg, info)
    device = pick_device(cfg.model.device, ctx.local_rank)
    dtype = pick_dtype(cfg.model.dtype, device)
    t0 = time.time()
    transport = _init_group(ctx, cfg, device)
    startup = {"start_time": t_start, "group_s": time.time() - t0}
    try:
        return _run(ctx, cfg, job, device, dtype, transport, t_start, startup)
    finally:
        if transport is not None and dist.is_initialized():
            dist.destroy_process_group()


def _run(ctx, cfg: EngineConfig, job: JobLayout, device, dtype, transport, t_start: float, startup: dict) -> dict:
    layers = job.stage_layers[ctx.rank]
    trace = trace_part(Path(cfg.output.dir).expanduser(), ctx.rank) if cfg.output.trace else None
    name = f"stage {ctx.rank} layers {[layers.start, layers.stop]}"
    timeline = Timeline(ctx.rank, clock=clock_for(device), trace=trace, tag=right_context_tag(job), name=name)
    t0 = time.time()
    stage = build_stage(job.info, layers, ctx.is_first, ctx.is_last, dtype, device)
    stage.install_attention(attention_factory(cfg.attention))
    tower = None
    if job.av is not None:
        from dualpar.av.stage import build_audio_stage

        tower = build_audio_stage(job, stage, dtype, device)
    scheduler = load_scheduler(job.info, cfg.schedule.flow_shift)
    scheduler.set_timesteps(job.plan.steps, device="cpu")
    load_s = time.time() - t0
    t0 = time.time()
    embeds = _text_embeds(job, ctx, transport, device)
    encode_s = time.time() - t0
    if tower is None:
        runner = StageRunner(stage, job, embeds, scheduler.timesteps, dtype, device)
    else:
        from dualpar.av.stage import AVStageRunner

        runner = AVStageRunner(stage, tower, job, embeds, scheduler.timesteps, dtype, device)
    engine = PipelineEngine(job, runner, ctx.rank, ctx.world_size, transport, timeline)
    ref = _restart_point(cfg) if ctx.rank == 0 else None
    engine.start_iteration = _agree_start(transport, device, ref.iteration if ref is not None else 0)
    stop = StopRequest(checkpoint_dir(cfg), stage0=ctx.rank == 0, signals=cfg.launcher != "ray")
    if ctx.rank != 0:
        engine.hooks = IterationHooks(on_iteration=FaultInjector(cfg, ctx.rank))
        with stop:
            engine.run_relay()
        _gather(ctx, transport, stage_stats(engine) | startup | {"load_s": load_s})
        return {"rank": ctx.rank}
    startup |= {"load_s": load_s}
    return _run_stage0(ctx, cfg, job, engine, scheduler, (ref, stop), device, transport, t_start, startup, encode_s)


def _run_stage0(ctx, cfg, job, engine, scheduler, restart, device, transport, t_start, startup, encode_s) -> dict:
    ref, stop = restart
    load_s = startup["load_s"]
    out_dir = _prepare_output_dir(cfg, resuming=ref is not None)
    state = load_state(ref) if ref is not None else None
    t0 = time.time()
    codec = load_codec(job.info, device) if cfg.output.video else None
    audio_codec = None
    if job.av is not None and cfg.output.video:
        from dualpar.av.codec import load_codec as load_audio_codec

        audio = job.av.audio
        audio_codec = load_audio_codec(audio.codec, audio.codec_path, audio.codec_subfolder)
    load_s += time.time() - t0
    queue = _block_queue(cfg, job, scheduler)
    result = Stage0Result()
    if state is not None:  # keep the frame accounting and per-block timings; phase times are this run's
        queue.load_state_dict(state["queue"])
        result = Stage0Result(**state["result"] | {"decode_s": 0.0, "denoise_s": 0.0})
    writer = OutputWriter(job, codec, out_dir, resume=state["output"] if state is not None else None,
                          audio_codec=audio_codec)
    progress = Progress(job.geometry.n_blocks, job.frames, enabled=cfg.output.progress)
    progress.resume_from(len(result.block_seconds), result.frames)
    ckpt = Stage0Checkpointer(cfg, len(job.plan.iterations), engine.start_iteration, stop)
    ckpt.attach(queue, writer, result)
    engine.hooks = IterationHooks(ckpt.on_iteration, ckpt.wants_snapshot, ckpt.snapshot)
    engine.expect_outputs()
    t0 = time.time()
    with stop:
        result = engine.run_stage0(queue, writer, progress, result)
    render_s = time.time() - t0
    t0 = time.time()
    paths = writer.close()
    ckpt.finish()
    close_s = time.time() - t0
    t0 = time.time()
    stages = _gather(ctx, transport, stage_stats(engine) | startup)
    gather_s = time.time() - t0
    # rank 0's time outside loading, encoding and rendering, for the performance model's wall-time split
    phases = {"load_s": load_s, "encode_s": encode_s, "render_s": render_s}
    phases |= {"group_s": startup["group_s"], "close_s": close_s, "gather_s": gather_s}
    facts = RenderFacts(cfg, job, stages, result, paths, t_start, device, engine.runner.dtype, phases)
    facts.samples_written = writer.samples_written if job.av is not None else None
    facts.resumed_from = ref.iteration if ref is not None else None
    facts.render_started_at, facts.checkpoint = t0, ckpt.stats
    return write_report(out_dir, facts)


def _block_queue(cfg: EngineConfig, job: JobLayout, scheduler) -> BlockQueue:
    if job.av is not None:
        from dualpar.av.queue import AVBlockQueue

        return AVBlockQueue(*_video_queue_args(cfg, job, scheduler), layout=job.av, seed=cfg.seed)
    return BlockQueue(*_video_queue_args(cfg, job, scheduler))


def _video_queue_args(cfg: EngineConfig, job: JobLayout, scheduler) -> tuple:
    h, w = job.latent_hw
    geo = job.geometry
    noise = CoordinatedNoise(
        cfg.seed,
        int(job.info.transformer["out_channels"]),
        geo.block_latents,
        geo.context_latents,
        h,
        w,
        coordinated=cfg.schedule.coordinated_noise,
    )
    return (
        geo,
        noise,
        scheduler,
        scheduler.timesteps,
        scheduler.sigmas,
        cfg.schedule.left_context,
        job.info.prediction,
        job.info.x0_min_t,
    )


def _restart_point(cfg: EngineConfig) -> CheckpointRef | None:
    """Rank 0: the checkpoint to resume from, or a fresh start (stale checkpoints removed first, so a later
    resume=auto can never pick them up; fault markers survive unless resume=false)."""
    ref = resume_from(cfg)
    if ref is None:
        clear_checkpoints(checkpoint_dir(cfg), markers=cfg.resume is False)
    return ref


def _agree_start(transport, device: torch.device, start: int) -> int:
    """Every rank starts at rank 0's iteration (the same boundary the checkpoint was taken at)."""
    if transport is None:
        return start
    comm_device = device if device.type == "cuda" else torch.device("cpu")
    value = torch.tensor([start], dtype=torch.int64, device=comm_device)
    return int(transport.broadcast(value, 0).item())


def _gather(ctx: WorkerContext, transport, own: dict) -> list[dict]:
    if transport is None:
        return [own]
    gathered: list = [None] * ctx.world_size if ctx.rank == 0 else None
    dist.gather_object(own, gathered, dst=0)
    return gathered or []
