"""`worker_main`: what every rank runs, under the local, spawn, torchrun and Ray launchers alike.

A composition root: it binds the rank to its device (dualpar.topology), connects it (dualpar.transport.link:
control plane and data plane), loads only this rank's layer shard, has rank 0 encode the prompts once and
broadcast them, runs the engine, and gathers every rank's timeline into rank 0's report (dualpar.report).
Restarts: rank 0 decides whether the job resumes (dualpar.checkpoint) and broadcasts the iteration every rank
starts at; only rank 0 holds restart state. A rank that fails tells every other rank to stop (control plane).
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dualpar.attention.factory import attention_factory
from dualpar.block_queue import BlockQueue
from dualpar.checkpoint import (
    CheckpointRef,
    FaultInjector,
    Interrupted,
    Stage0Checkpointer,
    StopRequest,
    checkpoint_dir,
    clear_checkpoints,
    load_state,
    resume_from,
)
from dualpar.config import EngineConfig
from dualpar.engine import IterationHooks, PipelineEngine, Stage0Result
from dualpar.errors import PeerError
from dualpar.job import JobLayout
from dualpar.models.loader import build_experts, load_codec, load_prompt_encoder, load_scheduler, pick_dtype
from dualpar.models.registry import read_model_info
from dualpar.output import OutputWriter
from dualpar.output_worker import OutputWorker
from dualpar.progress import Progress
from dualpar.report import RenderFacts, right_context_tag, stage_stats, write_report
from dualpar.runner import StageRunner
from dualpar.threads import apply_threads
from dualpar.timeline import Timeline, clock_for, trace_part
from dualpar.topology import WorkerContext, bind_device
from dualpar.transport.link import Link, connect
from dualpar.validate import OUTPUT_FILES, resolve_config


@dataclass
class RankRun:
    """One rank's job: who it is, what it renders, where it computes and how it talks to the others."""

    ctx: WorkerContext
    cfg: EngineConfig
    job: JobLayout
    device: torch.device
    dtype: torch.dtype
    link: Link | None  # None for a single stage
    startup: dict = field(default_factory=dict)  # start_time, group_s, load_s: every rank's report entry
    encode_s: float = 0.0

    def loading(self):
        """Long local work (weights, prompts): the control plane counts this rank as alive meanwhile."""
        return self.link.control.waiting() if self.link is not None else nullcontext()


def worker_main(ctx: WorkerContext, cfg: EngineConfig) -> dict:
    """Run this rank's part of the job; rank 0 returns (and writes) the report."""
    t_start = time.time()
    apply_threads(cfg)  # one share of the node's cores per process (dualpar.threads)
    info = read_model_info(cfg.model.name, cfg.model.path, cfg.model.init_seed)
    cfg = resolve_config(cfg, info)
    device = bind_device(cfg.model.device, ctx.local_rank)  # before anything touches CUDA
    t0 = time.time()
    link = connect(ctx, cfg, device)
    run = RankRun(
        ctx,
        cfg,
        JobLayout(cfg, info),
        device,
        pick_dtype(cfg.model.dtype, device),
        link,
        {"start_time": t_start, "group_s": time.time() - t0},
    )
    if link is None:
        return _run(run)
    done = False
    try:
        report = _run(run)
        done = True
        return report
    except (Interrupted, SystemExit):  # a requested stop: stage 0 checkpointed; the relays leave on their own
        raise
    except BaseException as err:
        link.fail(err)
        raise
    finally:
        link.close(done)


def _run(run: RankRun) -> dict:
    ctx, cfg = run.ctx, run.cfg
    engine, scheduler = _build_engine(run)
    ref = _restart_point(cfg) if ctx.is_first else None
    engine.start_iteration = _agree_start(run, ref.iteration if ref is not None else 0)
    stop = StopRequest(checkpoint_dir(cfg), stage0=ctx.is_first, signals=cfg.launcher != "ray")
    if not ctx.is_first:
        engine.hooks = IterationHooks(on_iteration=FaultInjector(cfg, ctx.rank))
        with stop:
            try:
                engine.run_relay()
            except PeerError as err:
                raise stop.peer_left(err) from None
        _gather(run, stage_stats(engine) | run.startup)
        return {"rank": ctx.rank}
    return _run_stage0(run, engine, scheduler, ref, stop)


def _build_engine(run: RankRun) -> tuple[PipelineEngine, object]:
    """This rank's layers (and audio tower), the solver template, the prompt embeddings and the engine."""
    ctx, cfg, job, device, dtype = run.ctx, run.cfg, run.job, run.device, run.dtype
    layers = job.stage_layers[ctx.rank]
    trace = trace_part(Path(cfg.output.dir).expanduser(), ctx.rank) if cfg.output.trace else None
    name = f"stage {ctx.rank} layers {[layers.start, layers.stop]}"
    timeline = Timeline(ctx.rank, clock=clock_for(device), trace=trace, tag=right_context_tag(job), name=name)
    t0 = time.time()
    embeds = _encode_prompts(run) if ctx.is_first else None  # before the layers exist: never both in memory
    run.encode_s = time.time() - t0
    t0 = time.time()
    with run.loading():
        experts = build_experts(job.info, layers, ctx.is_first, ctx.is_last, dtype, device)  # Wan2.2 A14B: 2
        for expert in experts:
            expert.install_attention(attention_factory(cfg.attention))
            if cfg.model.compile:
                expert.compile_blocks()
        stage = experts[0]
        tower = None
        if job.av is not None:
            from dualpar.av_runner import build_audio_stage

            tower = build_audio_stage(job, stage, dtype, device)
    scheduler = load_scheduler(job.info, cfg.schedule.flow_shift)
    scheduler.set_timesteps(job.plan.steps, device="cpu")
    run.startup["load_s"] = time.time() - t0
    embeds = _share_embeds(run, embeds)
    image_embeds = None
    if job.info.image_channels and cfg.image is not None:  # Wan2.1 I2V: rank 0's CLIP image tokens on every rank
        from dualpar.models.conditioning import clip_image_embeds

        image_embeds = _share_embeds(run, clip_image_embeds(job.info, cfg.image, device) if ctx.is_first else None)
    if tower is None:
        low = experts[1] if len(experts) > 1 else None
        runner = StageRunner(stage, job, embeds, scheduler.timesteps, dtype, device, low_noise=low)
        if image_embeds is not None:
            runner.image_embeds = image_embeds.to(device=device, dtype=dtype)
    else:
        from dualpar.av_runner import AVStageRunner

        runner = AVStageRunner(stage, tower, job, embeds, scheduler.timesteps, dtype, device)
    transport = run.link.transport if run.link is not None else None
    return PipelineEngine(job, runner, ctx.rank, ctx.world_size, transport, timeline), scheduler


def _encode_prompts(run: RankRun) -> torch.Tensor:
    """Rank 0 encodes every distinct prompt once, before its layer shard is materialised, and frees the encoder:
    the encoder and the shard never share the device (dualpar.planner counts the larger of the two)."""
    with run.loading():
        # model.text_encoder_device=cpu: the encoder never takes device memory (embeds move with the runner)
        on_host = run.cfg.model.text_encoder_device == "cpu"
        encoder = load_prompt_encoder(run.job.info, torch.device("cpu") if on_host else run.device)
        embeds = encoder.encode(list(run.job.texts)).float()
        del encoder
        if run.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the encoder's memory back before the layers need it
    return embeds


def _share_embeds(run: RankRun, embeds: torch.Tensor | None) -> torch.Tensor:
    """Rank 0's prompt embeddings on every rank (over the gloo group; the others load their layers meanwhile)."""
    if run.link is None:
        assert embeds is not None
        return embeds
    transport = run.link.transport
    shape = torch.tensor(list(embeds.shape) if run.ctx.is_first else [0, 0, 0], dtype=torch.int64)
    shape = transport.broadcast(shape, 0)
    if not run.ctx.is_first:
        embeds = torch.empty(tuple(int(s) for s in shape.tolist()), dtype=torch.float32)
    return transport.broadcast(embeds, 0)


def _prepare_output_dir(cfg: EngineConfig, resuming: bool) -> Path:
    out = Path(cfg.output.dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.output.overwrite and not resuming:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "video.parts", ignore_errors=True)
    return out


def _run_stage0(run: RankRun, engine: PipelineEngine, scheduler, ref: CheckpointRef | None, stop) -> dict:
    cfg, job, device = run.cfg, run.job, run.device
    t_start, startup, encode_s = run.startup["start_time"], run.startup, run.encode_s
    out_dir = _prepare_output_dir(cfg, resuming=ref is not None)
    state = load_state(ref) if ref is not None else None
    t0 = time.time()
    codec = load_codec(job.info, device) if cfg.output.video else None
    audio_codec = None
    if job.av is not None and cfg.output.video:
        from dualpar.av.codec import load_codec as load_audio_codec

        audio = job.av.audio
        audio_codec = load_audio_codec(audio.codec, audio.codec_path, audio.codec_subfolder)
    load_s = startup["load_s"] + time.time() - t0
    queue = _block_queue(job, scheduler, device)
    result = Stage0Result()
    if state is not None:  # keep the frame accounting and per-block timings; phase times are this run's
        queue.load_state_dict(state["queue"])
        result = Stage0Result(**state["result"] | {"decode_s": 0.0, "denoise_s": 0.0, "output_wait_s": 0.0})
    writer = OutputWriter(
        job, codec, out_dir, resume=state["output"] if state is not None else None, audio_codec=audio_codec
    )
    progress = Progress(job.geometry.n_blocks, job.frames, enabled=cfg.output.progress)
    progress.resume_from(len(result.block_seconds), result.frames)
    ckpt = Stage0Checkpointer(cfg, len(job.plan.iterations), engine.start_iteration, stop)
    ckpt.attach(queue, writer, result)
    engine.hooks = IterationHooks(ckpt.on_iteration, ckpt.wants_snapshot, ckpt.snapshot)
    engine.expect_outputs()
    t0 = time.time()
    output = OutputWorker(writer, cfg.output.worker, cfg.output.queue_blocks, device)
    with stop, output:  # an exception drops the pending blocks; a checkpoint has drained them before
        result = engine.run_stage0(queue, output, progress, result)
    render_s = time.time() - t0
    t0 = time.time()
    paths = writer.close()  # idempotent: a crash from here to discard_parts resumes and finishes again
    close_s = time.time() - t0
    t0 = time.time()
    stages = _gather(run, stage_stats(engine) | startup)
    gather_s = time.time() - t0
    # rank 0's time outside loading, encoding and rendering, for the performance model's wall-time split
    phases = {"load_s": load_s, "encode_s": encode_s, "render_s": render_s}
    phases |= {"group_s": startup["group_s"], "close_s": close_s, "gather_s": gather_s}
    facts = RenderFacts(cfg, job, stages, result, paths, t_start, device, engine.runner.dtype, phases)
    facts.samples_written = writer.samples_written if job.av is not None else None
    facts.resumed_from = ref.iteration if ref is not None else None
    facts.render_started_at, facts.checkpoint = t0, ckpt.stats
    report = write_report(out_dir, facts)
    ckpt.finish()  # complete: only now may the checkpoints and then the segments go (issue 12.4)
    writer.discard_parts()
    return report


def _block_queue(job: JobLayout, scheduler, device: torch.device) -> BlockQueue:
    """Stage 0's block queue, its latents and solvers on the compute device."""
    if job.av is not None:
        from dualpar.av.queue import AVBlockQueue

        return AVBlockQueue.for_job(job, scheduler, device, layout=job.av, seed=job.cfg.seed)
    first_frame = channel = None
    if job.cfg.image is not None:  # image=: the conditioning latents, from the file on every run (and resume)
        from dualpar.models.conditioning import channel_condition, first_frame_latent

        assert job.cfg.height is not None and job.cfg.width is not None
        if job.info.image_channels:  # Wan2.1 I2V: frame mask + condition latents for every latent frame
            total = job.geometry.total_latents
            channel = channel_condition(job.info, job.cfg.image, job.cfg.height, job.cfg.width, total)
        else:  # Wan2.2 TI2V-5B: block 0's first-frame latent
            first_frame = first_frame_latent(job.info, job.cfg.image, job.cfg.height, job.cfg.width)
    return BlockQueue.for_job(job, scheduler, device, first_frame=first_frame, channel_condition=channel)


def _restart_point(cfg: EngineConfig) -> CheckpointRef | None:
    """Rank 0: the checkpoint to resume from, or a fresh start (stale checkpoints removed first, so a later
    resume=auto can never pick them up; fault markers survive unless resume=false)."""
    ref = resume_from(cfg)
    if ref is None:
        clear_checkpoints(checkpoint_dir(cfg), markers=cfg.resume is False)
    return ref


def _agree_start(run: RankRun, start: int) -> int:
    """Every rank starts at rank 0's iteration (the same boundary the checkpoint was taken at)."""
    if run.link is None:
        return start
    return int(run.link.transport.broadcast(torch.tensor([start], dtype=torch.int64), 0).item())


def _gather(run: RankRun, own: dict) -> list[dict]:
    """Every rank's stats on rank 0, over the gloo control group (never a GPU)."""
    return [own] if run.link is None else run.link.gather_reports(own)
