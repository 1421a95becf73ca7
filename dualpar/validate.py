"""Fill model defaults into a job and reject every impossible option before any weights load.

Each error names the config key and the fix (`ConfigError`); the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from dualpar.checkpoint import CheckpointRef, checkpoint_dir, resume_from
from dualpar.config import (
    JOBS,
    LAUNCHERS,
    LEFT_CONTEXT,
    OUTPUT_WORKERS,
    SPLIT_MODES,
    TRANSPORTS,
    EngineConfig,
    PromptSegment,
)
from dualpar.errors import ConfigError
from dualpar.models.codec import latents_for_frames
from dualpar.models.registry import ModelInfo
from dualpar.run_lock import LOCK_NAME, probe_run_lock, read_holder

RAY_PLACEMENTS = ("auto", "STRICT_PACK", "PACK", "SPREAD", "STRICT_SPREAD")
MAX_PLAN_PASSES = 5_000_000  # blocks x steps: the plan is built in memory up front, a few hundred bytes a pass
OUTPUT_FILES = ("video.mp4", "audio.wav", "latents.safetensors", "report.json", "preview.png", "trace.json")


def resolve_config(cfg: EngineConfig, info: ModelInfo) -> EngineConfig:
    """Replace every None with the model's default, giving a fully concrete config. A torchrun restart
    (`--max-restarts`: every attempt after the first) becomes `restart_config`, so validation covers it."""
    if cfg.launcher == "torchrun" and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        cfg = restart_config(cfg)
    d = info.defaults
    sched = cfg.schedule
    sched = dataclasses.replace(
        sched,
        steps=d["steps"] if sched.steps is None else sched.steps,
        block_latents=d["block_latents"] if sched.block_latents is None else sched.block_latents,
        context_latents=d["context_latents"] if sched.context_latents is None else sched.context_latents,
        guidance=d["guidance"] if sched.guidance is None else sched.guidance,
    )
    output = cfg.output
    if output.fps is None:
        output = dataclasses.replace(output, fps=int(d["fps"]))
    return dataclasses.replace(
        cfg,
        prompt=cfg.prompt or (PromptSegment(0, d["prompt"]),),
        negative_prompt=d["negative_prompt"] if cfg.negative_prompt is None else cfg.negative_prompt,
        frames=d["frames"] if cfg.frames is None else cfg.frames,
        height=d["height"] if cfg.height is None else cfg.height,
        width=d["width"] if cfg.width is None else cfg.width,
        schedule=sched,
        output=output,
    )


def restart_config(cfg: EngineConfig) -> EngineConfig:
    """The config of an automatic restart of a run (Ray's and torchrun's restarts): continue from its latest
    checkpoint, or start over when none was written yet. Whatever the directory holds then was written by this
    run's own first attempt (it held the lock, and its validation found no one else's outputs), so starting
    over may replace it: `output.overwrite` is set. Launchers validate the result like any start."""
    return cfg.replace(resume="auto", output=dataclasses.replace(cfg.output, overwrite=True))


def prepare_job(cfg: EngineConfig) -> EngineConfig:
    """Read the model's facts, fill defaults and validate: the resolved config, or ConfigError. Every start
    runs this, first attempts and automatic restarts alike."""
    from dualpar.models.registry import read_model_info

    info = read_model_info(cfg.model.name, cfg.model.path, cfg.model.init_seed)
    cfg = resolve_config(cfg, info)
    validate_config(cfg, info)
    return cfg


def validate_config(cfg: EngineConfig, info: ModelInfo) -> None:
    """Raise ConfigError for the first impossible or inconsistent option of a resolved config."""
    _check_choices(cfg)
    if _owns_outputs(cfg):
        probe_run_lock(cfg)  # another run in this directory: refuse before reading or touching anything
    _check_environment(cfg, info)
    _check_geometry(cfg, info)
    _check_prompt(cfg)
    _check_image(cfg, info)
    _check_schedule(cfg, info)
    _check_parallel(cfg, info)
    ref = _check_restart(cfg, info)
    _check_ray(cfg)
    _check_output(cfg, resuming=ref is not None)
    _check_audio(cfg, info)
    _check_device_options(cfg)


def _check_device_options(cfg: EngineConfig) -> None:
    """model.text_encoder_device and attention.kernel (the latter against what this machine can run)."""
    if cfg.model.text_encoder_device not in ("auto", "cpu"):
        raise ConfigError(
            "model.text_encoder_device", f"is {cfg.model.text_encoder_device!r}", "use auto (the compute device) or cpu"
        )
    if not isinstance(cfg.model.compile, bool):
        raise ConfigError("model.compile", f"is {cfg.model.compile!r}", "use true or false")
    from dualpar.attention.dense import DEFAULT_KERNEL, available_kernels, kernel_problem
    from dualpar.models.loader import pick_device, pick_dtype

    kernel = str(dict(cfg.attention).get("kernel", DEFAULT_KERNEL))
    device = pick_device(cfg.model.device)
    problem = kernel_problem(kernel, device.type, pick_dtype(cfg.model.dtype, device))
    if problem is not None:
        here = ", ".join(available_kernels(device.type)) or "none"
        raise ConfigError("attention.kernel", problem, f"use one available on {device.type} here: {here}")


def _check_choices(cfg: EngineConfig) -> None:
    if cfg.job not in JOBS:
        raise ConfigError("job", f"unknown job {cfg.job!r}", f"use one of {', '.join(JOBS)}")
    if cfg.launcher not in LAUNCHERS:
        raise ConfigError("launcher", f"unknown launcher {cfg.launcher!r}", f"use one of {', '.join(LAUNCHERS)}")
    if cfg.model.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError("model.dtype", f"unknown dtype {cfg.model.dtype!r}", "use auto, float32, bfloat16 or float16")
    if cfg.model.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("model.device", f"unknown device {cfg.model.device!r}", "use auto, cpu or cuda")


def _check_environment(cfg: EngineConfig, info: ModelInfo) -> None:
    """What the launcher and device need from this machine, and that the model directory is complete."""
    if cfg.launcher == "torchrun":
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ConfigError(
                "launcher",
                f"launcher=torchrun but this process was not started by torchrun ({', '.join(missing)} unset)",
                f"run `torchrun --nproc-per-node {cfg.parallel.stages} -m dualpar ...`, or use launcher=spawn "
                "on one machine",
            )
        world = os.environ["WORLD_SIZE"]
        if world != str(cfg.parallel.stages):
            raise ConfigError(
                "parallel.stages",
                f"is {cfg.parallel.stages} but torchrun started WORLD_SIZE={world} processes",
                f"set parallel.stages={world}, or start torchrun with --nproc-per-node {cfg.parallel.stages}",
            )
    if cfg.model.device == "cuda" and cfg.launcher != "ray":  # Ray stages run on other nodes: checked there
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "model.device", "is cuda but this machine has no usable CUDA device", "use model.device=auto (or cpu)"
            )
    if info.path is not None:
        _check_model_files(info.path)


def _check_model_files(root: Path) -> None:
    """Every safetensors file whole (its header's byte ranges fit the file) and a tokenizer present, so a
    broken download fails here instead of after the other weights have loaded."""
    key = "model.path"
    tokenizer = root / "tokenizer"
    if not tokenizer.is_dir() or not any(tokenizer.iterdir()):
        raise ConfigError(key, f"{root} has no tokenizer/ files", "download the checkpoint's tokenizer folder too")
    for path in sorted(root.glob("*/*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            raise ConfigError(key, f"{path.relative_to(root)} is damaged ({problem})", "download that file again")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"a {size}-byte file cannot hold its header"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        return f"unreadable header: {err}"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"truncated: {size} of {need} bytes"
    return None


def _check_prompt(cfg: EngineConfig) -> None:
    if not cfg.prompt:
        raise ConfigError("prompt", "is empty", 'give prompt="..." or a list of {frame, text}')
    for i, seg in enumerate(cfg.prompt):
        if not seg.text.strip():
            key = "prompt" if len(cfg.prompt) == 1 else f"prompt[{i}].text"
            raise ConfigError(key, "is empty", "describe the video in words")
    if cfg.prompt[0].frame != 0:
        raise ConfigError(
            "prompt[0].frame", f"is {cfg.prompt[0].frame}", "the first timeline entry must start at frame 0"
        )
    frames = [s.frame for s in cfg.prompt]
    if len(set(frames)) != len(frames):
        raise ConfigError("prompt", "has two entries at the same frame", "give each timeline entry its own frame")
    assert cfg.frames is not None
    if frames[-1] >= cfg.frames:
        raise ConfigError(
            f"prompt[{len(frames) - 1}].frame",
            f"is {frames[-1]}, past the video's {cfg.frames} frames",
            f"use a frame below {cfg.frames}",
        )


def _check_image(cfg: EngineConfig, info: ModelInfo) -> None:
    """`image=`: a model that conditions on a first frame, and a file that opens as an image."""
    from dualpar.models.conditioning import image_problem, needs_image, takes_image

    if cfg.image is None:
        if needs_image(info):
            raise ConfigError("image", "is not set but the model is image-to-video (Wan2.1 I2V)", "give image=<png>")
        return

    if not takes_image(info) or cfg.job != "video":
        raise ConfigError(
            "image",
            f"is set but model {info.name!r} (job={cfg.job}) cannot condition on an image",
            "use a Wan2.2 TI2V-5B or Wan2.1 I2V directory with job=video, or drop image=",
        )
    problem = image_problem(cfg.image)
    if problem is not None:
        raise ConfigError("image", problem, "give a readable png or jpg file")


def _check_geometry(cfg: EngineConfig, info: ModelInfo) -> None:
    assert cfg.frames is not None and cfg.height is not None and cfg.width is not None
    if cfg.frames < 1:
        raise ConfigError("frames", f"is {cfg.frames}", "ask for at least 1 frame")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError("seed", f"is {cfg.seed}", "use a seed in [0, 2**63)")
    m = info.pixel_multiple
    for key, value in (("height", cfg.height), ("width", cfg.width)):
        if value < m or value % m:
            lo, hi = max(m, value // m * m), (value // m + 1) * m
            raise ConfigError(
                key, f"{value} is not a positive multiple of {m} (VAE stride x patch)", f"use {lo} or {hi}"
            )
    rope_len = int(info.transformer.get("rope_max_seq_len", 1024))
    for key, value in (("height", cfg.height), ("width", cfg.width)):
        if value // m > rope_len:
            raise ConfigError(
                key,
                f"{value} pixels are {value // m} patches, beyond the model's positional range ({rope_len})",
                f"use at most {rope_len * m}",
            )
    if cfg.output.fps is None or cfg.output.fps < 1:
        raise ConfigError("output.fps", f"is {cfg.output.fps}", "use a positive frame rate such as 16")


def _check_experts(cfg: EngineConfig, info: ModelInfo) -> None:
    """schedule.guidance_low and the jobs that run a two-expert model (Wan2.2 A14B)."""
    low = cfg.schedule.guidance_low
    if low is not None and info.num_experts < 2:
        raise ConfigError(
            "schedule.guidance_low",
            f"is {low} but {info.name} has one expert (WanPipeline refuses guidance_scale_2 without boundary_ratio)",
            "leave schedule.guidance_low=null, or use a two-expert (Wan2.2 A14B) directory",
        )
    if low is not None and low < 0:
        raise ConfigError("schedule.guidance_low", f"is {low}", "use a scale >= 0, or null for schedule.guidance")
    if info.num_experts > 1 and cfg.job == "av":
        raise ConfigError(
            "job", "job=av has no audio tower for a two-expert model (Wan2.2 A14B)", "use job=video or sparse_video"
        )
    if info.diffusion_forcing and cfg.job == "av":
        raise ConfigError(
            "job", "job=av has no audio tower for SkyReels-V2 diffusion forcing", "use job=video or sparse_video"
        )


def _check_schedule(cfg: EngineConfig, info: ModelInfo) -> None:
    s = cfg.schedule
    assert s.steps is not None and s.block_latents is not None and s.context_latents is not None
    if s.steps < 1:
        raise ConfigError("schedule.steps", f"is {s.steps}", "use at least 1 denoising step")
    if s.block_latents < 1:
        raise ConfigError("schedule.block_latents", f"is {s.block_latents}", "use at least 1 latent frame per block")
    if not 0 <= s.context_latents <= s.block_latents:
        raise ConfigError(
            "schedule.context_latents",
            f"C={s.context_latents} is outside [0, P={s.block_latents}]",
            f"use 0 <= schedule.context_latents <= {s.block_latents}",
        )
    if s.left_context not in LEFT_CONTEXT:
        raise ConfigError("schedule.left_context", f"is {s.left_context!r}", "use ahead or same")
    if s.guidance is None or s.guidance < 0:
        raise ConfigError("schedule.guidance", f"is {s.guidance}", "use a scale >= 0 (1 disables guidance)")
    _check_experts(cfg, info)
    _check_plan_size(cfg, info)
    rope_len = int(info.transformer.get("rope_max_seq_len", 1024))
    key_frames = s.block_latents + 2 * s.context_latents
    if key_frames > rope_len:
        raise ConfigError(
            "schedule.block_latents",
            f"P+2C={key_frames} latent frames exceed the model's RoPE table ({rope_len})",
            "use a smaller block_latents or context_latents",
        )


def _check_plan_size(cfg: EngineConfig, info: ModelInfo) -> None:
    """The plan lists every pass up front (a few hundred bytes each): bound it before building it."""
    s = cfg.schedule
    assert cfg.frames is not None and s.steps is not None and s.block_latents is not None
    codec = info.codec
    latents = latents_for_frames(codec.temporal_stride, codec.causal_first_frame, cfg.frames)
    passes = -(-latents // s.block_latents) * s.steps
    if passes > MAX_PLAN_PASSES:
        most = cfg.frames * MAX_PLAN_PASSES // passes
        raise ConfigError(
            "frames",
            f"{cfg.frames} frames need {passes:,} denoising passes at schedule.steps={s.steps}, "
            f"schedule.block_latents={s.block_latents}; one job plans at most {MAX_PLAN_PASSES:,}",
            f"render at most about {most:,} frames per job (split a longer video into several jobs)",
        )


def _check_parallel(cfg: EngineConfig, info: ModelInfo) -> None:
    p = cfg.parallel
    if p.threads is not None and p.threads < 1:
        raise ConfigError("parallel.threads", f"is {p.threads}", "use at least 1 thread, or null for torch's default")
    if p.stages < 1:
        raise ConfigError("parallel.stages", f"is {p.stages}", "use at least 1 stage")
    if p.stages > info.num_layers:
        raise ConfigError(
            "parallel.stages",
            f"{p.stages} stages for a model of {info.num_layers} layers",
            f"use at most {info.num_layers} stages (each stage needs at least one layer)",
        )
    if p.split_mode not in SPLIT_MODES:
        raise ConfigError("parallel.split_mode", f"is {p.split_mode!r}", "use even or cost_aware")
    if p.split is not None and (
        len(p.split) != p.stages or any(n < 1 for n in p.split) or sum(p.split) != info.num_layers
    ):
        raise ConfigError(
            "parallel.split",
            f"{list(p.split)} does not give {p.stages} stages >= 1 layer summing to {info.num_layers}",
            f"list {p.stages} positive layer counts that sum to {info.num_layers}",
        )
    if p.timeout_s <= 0:
        raise ConfigError("parallel.timeout_s", f"is {p.timeout_s}", "use a positive number of seconds")
    if p.max_sends_in_flight < 1:
        raise ConfigError("parallel.max_sends_in_flight", f"is {p.max_sends_in_flight}", "use at least 1")
    if p.transport not in TRANSPORTS:
        raise ConfigError("parallel.transport", f"is {p.transport!r}", "use direct or host_staged")
    if cfg.launcher == "local" and p.stages > 1:
        raise ConfigError(
            "launcher",
            f"launcher=local runs one process but parallel.stages={p.stages}",
            "use launcher=spawn (one machine), torchrun or ray",
        )


def _check_output(cfg: EngineConfig, resuming: bool) -> None:
    o = cfg.output
    if not o.video and not o.latents:
        raise ConfigError(
            "output.video",
            "output.video=false and output.latents=false write nothing",
            "set output.video=true or output.latents=true",
        )
    if not str(o.dir).strip():
        raise ConfigError("output.dir", "is empty", "give a directory such as output.dir=outputs/render")
    if o.worker not in OUTPUT_WORKERS:
        raise ConfigError("output.worker", f"is {o.worker!r}", f"use {' or '.join(OUTPUT_WORKERS)}")
    if o.queue_blocks < 1:
        raise ConfigError("output.queue_blocks", f"is {o.queue_blocks}", "use at least 1")
    out = Path(o.dir).expanduser()
    for key, path in (("output.dir", out), ("checkpoint.dir", checkpoint_dir(cfg))):
        probe = path
        while not probe.exists():
            probe = probe.parent
        if probe == path and not path.is_dir():
            raise ConfigError(key, f"{path} is a file, not a directory", f"point {key} at a directory")
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(
                key,
                f"{path} cannot be created or written ({probe} is not writable)",
                "choose a writable directory",
            )
    if resuming or o.overwrite or not _owns_outputs(cfg):
        return
    leftovers = unfinished_run(cfg)
    if leftovers:
        holder = read_holder(out / LOCK_NAME)
        dead = f", left by {holder.describe()}, which is no longer running" if holder is not None else ""
        raise ConfigError(
            "resume",
            f"{out} holds an unfinished run ({', '.join(leftovers)}{dead}); starting over would delete it",
            "continue it with resume=true (same settings), or discard it with output.overwrite=true",
        )
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing:
        raise ConfigError(
            "output.dir",
            f"{out} already holds {', '.join(existing)} from a previous run",
            "choose another output.dir, or set output.overwrite=true to replace them",
        )


def _owns_outputs(cfg: EngineConfig) -> bool:
    """Whether this process writes the job's outputs (under torchrun only rank 0 does; the others validate the
    options but must not see rank 0's lock or its first files as someone else's)."""
    return cfg.launcher != "torchrun" or os.environ.get("RANK", "0") == "0"


def unfinished_run(cfg: EngineConfig) -> list[str]:
    """What an unfinished run left in the job's directories: checkpoints, finished segments, partial files."""
    out = Path(cfg.output.dir).expanduser()
    found = []
    checkpoints = sorted(checkpoint_dir(cfg).glob("iter-*.json")) if checkpoint_dir(cfg).is_dir() else []
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint(s) up to {checkpoints[-1].stem}")
    parts = out / "video.parts"
    if parts.is_dir():
        found.append(f"{sum(1 for p in parts.glob('*.mp4'))} finished video segment(s) in {parts.name}/")
    found += [f"partial {p.name}" for p in sorted(out.glob("*.tmp")) if p.is_file()]
    return found


def _check_restart(cfg: EngineConfig, info: ModelInfo) -> CheckpointRef | None:
    if not (isinstance(cfg.resume, bool) or cfg.resume == "auto"):
        raise ConfigError("resume", f"is {cfg.resume!r}", "use false, true or auto")
    c = cfg.checkpoint
    if c.every < 0:
        raise ConfigError("checkpoint.every", f"is {c.every}", "use 0 (only on SIGTERM/SIGINT) or a positive count")
    if c.keep < 1:
        raise ConfigError("checkpoint.keep", f"is {c.keep}", "keep at least 1 checkpoint")
    d = cfg.debug
    if (d.kill_rank is None) != (d.kill_at_iteration is None):
        raise ConfigError(
            "debug.kill_rank" if d.kill_rank is None else "debug.kill_at_iteration",
            "is unset while the other fault-injection key is set",
            "set both debug.kill_rank and debug.kill_at_iteration, or neither",
        )
    if d.kill_rank is not None and not 0 <= d.kill_rank < cfg.parallel.stages:
        raise ConfigError("debug.kill_rank", f"is {d.kill_rank}", f"use a rank in [0, {cfg.parallel.stages - 1}]")
    if d.kill_at_iteration is not None:
        from dualpar.job import JobLayout

        iterations = len(JobLayout(cfg, info).plan.iterations)
        if not 0 <= d.kill_at_iteration < iterations:
            raise ConfigError(
                "debug.kill_at_iteration", f"is {d.kill_at_iteration}", f"use an iteration in [0, {iterations - 1}]"
            )
    for rank_key, iter_key in (("stall_rank", "stall_at_iteration"),):
        rank, at = getattr(d, rank_key), getattr(d, iter_key)
        if (rank is None) != (at is None):
            raise ConfigError(
                f"debug.{rank_key}", "is set without its pair", f"set debug.{rank_key} and debug.{iter_key}"
            )
        if rank is not None and not 0 <= rank < cfg.parallel.stages:
            raise ConfigError(f"debug.{rank_key}", f"is {rank}", f"use a rank in [0, {cfg.parallel.stages - 1}]")
    ref = resume_from(cfg)  # raises for resume=true without a checkpoint, or a checkpoint of another job
    if ref is not None and ref.skipped and _owns_outputs(cfg):
        print(
            f"dualpar: warning: passing over damaged checkpoints ({'; '.join(ref.skipped)}); resuming from "
            f"{ref.state_path.stem}, the newest intact one",
            file=sys.stderr,
        )
    attention = dict(cfg.attention)
    if (
        ref is not None
        and attention.get("backend", "dense") == "clustered"
        and (attention.get("centroid_init", "per_block") == "per_block")
    ):
        raise ConfigError(
            "attention.centroid_init",
            "per_block k-means warm starts live on each stage and are not checkpointed, so this resumed job "
            "would differ from an uninterrupted one",
            "render resumable sparse jobs with attention.centroid_init=neighbour or cold",
        )
    return ref


def _check_ray(cfg: EngineConfig) -> None:
    r = cfg.ray
    if cfg.launcher == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("launcher", "is ray, but Ray is not installed", "pip install 'dualpar[ray]'")
    if r.placement not in RAY_PLACEMENTS:
        raise ConfigError("ray.placement", f"is {r.placement!r}", f"use one of {', '.join(RAY_PLACEMENTS)}")
    if r.max_restarts < 0:
        raise ConfigError("ray.max_restarts", f"is {r.max_restarts}", "use 0 (no restarts) or more")
    for key in ("cpus_per_stage", "gpus_per_stage"):
        value = getattr(r, key)
        if value is not None and value < 0:
            raise ConfigError(f"ray.{key}", f"is {value}", "use a non-negative resource amount (fractions work)")
    if r.ready_timeout_s <= 0:
        raise ConfigError("ray.ready_timeout_s", f"is {r.ready_timeout_s}", "use a positive number of seconds")


def _check_audio(cfg: EngineConfig, info: ModelInfo) -> None:
    """The `audio:` options of an av job: known keys and values, files present, a usable time grid."""
    if cfg.job != "av":
        if cfg.audio:
            raise ConfigError("audio", f"is set but job={cfg.job}", "add job=av, or drop the audio options")
        return
    from dualpar.av.config import AudioConfig
    from dualpar.av.layout import codec_facts
    from dualpar.av.timegrid import TimeGrid
    from dualpar.sinks.mp4 import AudioSpec

    try:
        audio = AudioConfig.from_mapping(cfg.audio)
    except (TypeError, ValueError) as err:
        text = str(err)
        key = text.split("=")[0].split(" ")[0] if text.startswith("audio.") else "audio"
        raise ConfigError(key, text, "see dualpar/conf/job/av.yaml for each option and its values") from err
    if audio.codec_path is not None:
        folder = Path(audio.codec_path).expanduser() / (audio.codec_subfolder or "")
        if not (folder / "config.json").is_file():
            raise ConfigError(
                "audio.codec_path",
                f"{folder} has no config.json",
                "point it at a local codec directory (for Stable Audio: its vae/ folder)",
            )
    if audio.init == "checkpoint":
        folder = Path(str(audio.checkpoint)).expanduser()
        if not (folder / "config.json").is_file() or not (folder / "audio_tower.safetensors").is_file():
            raise ConfigError(
                "audio.checkpoint",
                f"{folder} is not an audio tower directory",
                "give a directory written by AudioTower.save_pretrained (config.json + weights)",
            )
    if audio.sync_guidance is not None and not (cfg.schedule.guidance or 0.0) > 1.0:
        raise ConfigError(
            "audio.sync_guidance",
            "needs classifier-free guidance (the cond and uncond rows)",
            "set schedule.guidance above 1, or audio.sync_guidance=null",
        )
    facts = codec_facts(audio)
    assert cfg.output.fps is not None
    grid = TimeGrid(
        cfg.output.fps, facts.sample_rate, facts.hop, info.codec.temporal_stride, info.codec.causal_first_frame
    )
    try:
        audio.check_grid(grid)
        if cfg.output.video:
            AudioSpec(facts.sample_rate, facts.channels)
    except ValueError as err:
        key = "audio.mode" if "mode" in str(err) else "audio.codec"
        raise ConfigError(key, str(err), "use audio.mode=auto, or a codec whose rate AAC supports") from err
