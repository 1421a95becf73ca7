"""The typed, frozen job configuration: one default and one meaning per field, validated once.

Hydra composes YAML from `conf/`; `EngineConfig.from_mapping` converts it once, rejecting unknown keys.
Fields left as None take the model's own defaults in `resolve_config` (dualpar.models.registry), after which
every field is concrete and `validate_config` checks the job before any weights load.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dualpar.errors import ConfigError

JOBS = ("video", "sparse_video", "av")
LAUNCHERS = ("local", "spawn", "torchrun", "ray")
LEFT_CONTEXT = ("ahead", "same")
SPLIT_MODES = ("even", "cost_aware")
TRANSPORTS = ("direct", "host_staged")
OUTPUT_WORKERS = ("thread", "inline")


@dataclass(frozen=True)
class PromptSegment:
    """One entry of the prompt timeline: `text` applies from pixel frame `frame` on."""

    frame: int
    text: str


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"  # preset: tiny | small | toyworld | wan2.1-t2v-1.3b | wan2.1-t2v-14b | wan2.2-* (registry)
    path: str | None = None  # local diffusers directory; required for real Wan presets
    dtype: str = "auto"  # auto (float32 on CPU, bfloat16 on GPU) | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    init_seed: int = 0  # random-weight presets (tiny, small): weights are a function of this seed
    compile: bool = False  # torch.compile each transformer block (slow first pass, faster after; GPUs)
    text_encoder_device: str = "auto"  # auto: the compute device | cpu: encode on the host, freed before denoising


@dataclass(frozen=True)
class ScheduleConfig:
    steps: int | None = None  # T: denoising steps per block (None: model default)
    block_latents: int | None = None  # P: latent frames each block owns
    context_latents: int | None = None  # C: latent frames borrowed from each neighbour, 0 <= C <= P
    guidance: float | None = None  # classifier-free guidance scale; <= 1 disables the uncond branch
    left_context: str = "ahead"  # ahead: previous block after its latest update; same: at this block's level
    guidance_low: float | None = None  # two-expert models (Wan2.2 A14B): the low-noise expert's scale (None: guidance)
    flow_shift: float | None = None  # scheduler flow shift (None: the checkpoint's scheduler config)
    feature_cache: bool = True  # append the right neighbour's cached K/V to each block's keys
    coordinated_noise: bool = True  # reshuffled shared noise pool (False: fresh noise per block)


@dataclass(frozen=True)
class ParallelConfig:
    stages: int = 1  # N: pipeline stages (processes), each owning a contiguous slice of layers
    split: tuple[int, ...] | None = None  # explicit layers per stage, e.g. [3, 5]
    split_mode: str = "even"  # even | cost_aware (stage 0 and the last stage carry extra work)
    timeout_s: float = 300.0  # a peer silent for this long is reported and every rank exits non-zero
    cfg_split: bool = False  # send cond and uncond as two micro-batches
    max_sends_in_flight: int = 2  # outstanding sends per peer before the sender waits
    transport: str = "direct"  # direct: NCCL between GPUs (gloo on CPU) | host_staged: via host memory over gloo
    threads: int | None = None  # torch threads per process (None: torch's default)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "outputs/render"  # every output of the job goes here
    video: bool = True  # decode and write video.mp4 (false: latents only, no decoding)
    latents: bool = False  # write latents.safetensors [1, z_dim, latent_frames, h, w] float32
    fps: int | None = None  # video frame rate (None: model default, 16 for Wan)
    overwrite: bool = False  # replace a previous run's outputs in `dir`
    trace: bool = False  # write trace.json (Chrome trace format, all ranks merged)
    preview: bool = True  # write preview.png, a contact sheet of evenly spaced frames
    progress: bool = True  # progress line on the terminal
    worker: str = "thread"  # thread: decode + write beside the pipeline (dualpar.output_worker) | inline
    queue_blocks: int = 2  # finished blocks handed to the output worker and not yet written before stage 0 waits


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 0  # iterations between checkpoints (0: only on SIGTERM/SIGINT or a STOP file)
    dir: str | None = None  # default: <output.dir>/checkpoint (must be shared storage for multi-node restarts)
    keep: int = 2  # newest checkpoints kept on disk while rendering (all are removed when the job finishes)


@dataclass(frozen=True)
class DebugConfig:
    kill_rank: int | None = None  # fault injection: this rank SIGKILLs itself once (a marker in the
    kill_at_iteration: int | None = None  # checkpoint dir remembers it across restarts) at this iteration
    stall_rank: int | None = None  # fault injection: this rank stops responding (sleeps, alive) ...
    stall_at_iteration: int | None = None  # ... from this iteration on; peers must time out and exit non-zero


@dataclass(frozen=True)
class RayConfig:
    """Options of launcher=ray: where the cluster is, what each stage actor reserves, how often to restart."""

    address: str | None = None  # null: start a local Ray cluster for this run; auto: join the running one
    num_cpus: int | None = None  # local cluster only: CPUs it offers (null: every core)
    num_gpus: int | None = None  # local cluster only: GPUs it offers (null: detected)
    cpus_per_stage: float | None = None  # CPUs each stage actor reserves (null: 1 with a GPU, else 0.5)
    gpus_per_stage: float | None = None  # GPUs per stage actor (null: 1 if the cluster has GPUs and
    # model.device is not cpu, else 0)
    placement: str = "auto"  # auto (STRICT_PACK if one node fits every stage, else PACK) | STRICT_PACK | PACK
    max_restarts: int = 2  # times a failed group is torn down and restarted from the last checkpoint
    ready_timeout_s: float = 600.0  # wait this long for the placement group (every stage's resources)


@dataclass(frozen=True)
class EngineConfig:
    job: str = "video"
    prompt: tuple[PromptSegment, ...] = ()
    negative_prompt: str | None = None
    frames: int | None = None  # pixel frames the user gets, exactly
    height: int | None = None
    width: int | None = None
    seed: int = 0
    image: str | None = None  # png/jpg the video starts from (Wan2.2 TI2V-5B: block 0's first-frame latent)
    launcher: str = "local"
    plan_only: bool = False  # print the validated plan and exit 0
    resume: bool | str = False  # true: continue from the latest checkpoint; auto: if one exists; false: fresh
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    attention: Mapping[str, Any] = field(default_factory=dict)  # backend options, see dualpar.attention
    audio: Mapping[str, Any] = field(default_factory=dict)  # audio branch options for job=av
    cluster: Mapping[str, Any] = field(default_factory=dict)  # cluster preset for the planner's estimate
    ray: RayConfig = field(default_factory=RayConfig)  # Ray launcher and driver options

    @staticmethod
    def from_mapping(raw: Mapping[str, Any]) -> EngineConfig:
        """Build from a plain mapping (Hydra's composed config as a container), rejecting unknown keys."""
        return _build(EngineConfig, dict(raw), prefix="")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)


_NESTED = {
    "model": ModelConfig,
    "schedule": ScheduleConfig,
    "parallel": ParallelConfig,
    "output": OutputConfig,
    "checkpoint": CheckpointConfig,
    "debug": DebugConfig,
    "ray": RayConfig,
}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        key = prefix.rstrip(".") or "config"
        raise ConfigError(key, f"is {raw!r}, not a section of keys", f"give {key} as a mapping of its options")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise unknown_key(prefix + str(unknown[0]), known)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = prefix + name
        if cls is EngineConfig and name in _NESTED:
            kwargs[name] = _build(_NESTED[name], {} if value is None else value, prefix=f"{name}.")
        elif cls is EngineConfig and name == "prompt":
            kwargs[name] = parse_prompt(value)
        elif cls is EngineConfig and name in ("attention", "audio", "cluster"):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(key, f"is {value!r}, not a section of keys", f"give {key} as a mapping")
            kwargs[name] = dict(value or {})
        else:
            kwargs[name] = typed(key, value, hints[name])
    return cls(**kwargs)


def unknown_key(key: str, known: Any) -> ConfigError:
    """The error for a key no config section has, with the closest known spelling when there is one."""
    prefix, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {prefix + '.' if prefix else ''}{close[0]}? " if close else ""
    return ConfigError(key, "is not a known option", f"{hint}known keys here: {', '.join(sorted(known))}")


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def typed(key: str, value: Any, hint: Any) -> Any:
    """`value` checked against the field's annotation (None only where the field allows it); ints are exact
    (no bools, no floats), numbers finite, tuples lists of ints. ConfigError names the key and the type."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(key, "is null (or empty)", f"give {_describe(options)}")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise ConfigError(key, f"{value} is out of range", "use an integer below 2**63")
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(key, f"is {value}", "use a finite number")
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if (
            typing.get_origin(option) is tuple
            and isinstance(value, list | tuple)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return tuple(value)
    shown = f"{value!r}" if not isinstance(value, str) or value else "'' (empty)"
    raise ConfigError(key, f"is {shown}, not {_describe(options)}", f"give {key} {_describe(options)}")


def _describe(options: tuple) -> str:
    words = []
    for option in options:
        if option is type(None):
            words.append("null")
        elif typing.get_origin(option) is tuple:
            words.append("a list of integers")
        else:
            words.append(_TYPE_WORDS.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(words)


def parse_prompt(value: Any) -> tuple[PromptSegment, ...]:
    """A string, or a list of {frame, text}; returns the timeline sorted by frame."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (PromptSegment(0, value),)
    if isinstance(value, PromptSegment):
        return (value,)
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(
            "prompt", f"is {value!r}", 'give prompt="<text>" or a timeline [{frame: 0, text: "<text>"}, ...]'
        )
    segments = []
    for i, entry in enumerate(value):
        if isinstance(entry, PromptSegment):
            segments.append(entry)
            continue
        if not isinstance(entry, Mapping) or set(entry) != {"frame", "text"}:
            raise ConfigError(
                f"prompt[{i}]",
                f"is {entry!r}",
                'give each timeline entry as {frame: <int>, text: "<prompt>"}',
            )
        frame = typed(f"prompt[{i}].frame", entry["frame"], int)
        text = typed(f"prompt[{i}].text", entry["text"], str)
        segments.append(PromptSegment(frame, text))
    return tuple(sorted(segments, key=lambda s: s.frame))
