"""`dualpar.render(...)`: the Python API, and the one path from overrides to outputs that the CLI also takes.

It exists so that a program can render without a shell: the same keys as the command line (Hydra composes
them the same way), the same validation (a `ConfigError` whose text is what the CLI prints after
`dualpar: error:`), and a `RenderResult` with the output paths and rank 0's report.

    import dualpar
    result = dualpar.render(frames=65, prompt="a red ball, rolling", output={"dir": "outputs/ball"})
    result.outputs["video"]           # Path("outputs/ball/video.mp4")
    dualpar.render(["model=tiny", "parallel.stages=2", "launcher=spawn"])   # key=value strings, as on the CLI
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dualpar.config import EngineConfig
from dualpar.errors import ConfigError
from dualpar.job import JobLayout

HELP_HINT = "see `dualpar --help` for every group and key"


@dataclass(frozen=True)
class RenderResult:
    """What a render produced: output name -> path (video, latents, preview, report, ...), rank 0's report
    (None for plan_only and on torchrun ranks other than 0) and the plan that was printed."""

    outputs: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    plan: str = ""
    config: EngineConfig | None = None


def render(
    config: Sequence[str] | Mapping[str, Any] | None = None, /, *, log: TextIO | None | str = "stderr", **overrides: Any
) -> RenderResult:
    """Render a job. `config`: "key=value" strings exactly as on the command line, or a mapping of dotted keys
    to Python values; keyword arguments add Python values (a dict value sets that section's keys:
    `parallel={"stages": 2}`). The plan goes to `log` (default: sys.stderr at the time of the call; None: not
    printed); progress goes to stderr unless `output.progress=false`. Raises ConfigError for a bad option
    (its text is the CLI's message), PeerError for a failed pipeline."""
    return render_config(compose(to_overrides(config, overrides)), log=log)


def render_config(raw: Mapping[str, Any], log: TextIO | None | str = "stderr") -> RenderResult:
    """Validate a composed config mapping, print its plan and run it."""
    log = sys.stderr if log == "stderr" else log
    cfg, job = prepare(raw)
    plan = plan_text(job)
    if log is not None and _is_rank0(cfg):
        print(plan, file=log, flush=True)
    if cfg.plan_only:
        return RenderResult(plan=plan, config=cfg)
    from dualpar.launch.launchers import launch

    report = launch(cfg)
    outputs = {k: Path(v) for k, v in (report or {}).get("outputs", {}).items()}
    return RenderResult(outputs=outputs, report=report, plan=plan, config=cfg)


def prepare(raw: Mapping[str, Any]) -> tuple[EngineConfig, JobLayout]:
    """Config mapping -> resolved, validated config and its layout (raises ConfigError)."""
    from dualpar.models.registry import read_model_info
    from dualpar.validate import resolve_config, validate_config

    cfg = EngineConfig.from_mapping(raw)
    info = read_model_info(cfg.model.name, cfg.model.path, cfg.model.init_seed, plan_only=cfg.plan_only)
    cfg = resolve_config(cfg, info)
    validate_config(cfg, info)
    return cfg, JobLayout(cfg, info)


def plan_text(job: JobLayout) -> str:
    """The plan (and, with cluster=<preset>, the performance model's estimate and suggestion)."""
    from dualpar.planner import describe_cluster_estimate, describe_plan

    text = describe_plan(job)
    if job.cfg.cluster:
        text += "\n" + describe_cluster_estimate(job)
    return text


def _is_rank0(cfg: EngineConfig) -> bool:
    import os

    return cfg.launcher != "torchrun" or int(os.environ.get("RANK", "0")) == 0


# ---- overrides ----------------------------------------------------------------------------------------------


def to_overrides(config: Sequence[str] | Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> list[str]:
    """Hydra override strings from CLI-style strings, a mapping of dotted keys, and keyword arguments."""
    out: list[str] = []
    if isinstance(config, str):
        raise TypeError('pass overrides as a list of "key=value" strings or a mapping, not one string')
    if isinstance(config, Mapping):
        out += _mapping_overrides(config)
    elif config is not None:
        out += [str(o) for o in config]
    out += _mapping_overrides(kwargs)
    return out


def _mapping_overrides(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        name = prefix + str(key)
        if isinstance(value, Mapping) and name != "prompt":
            out += _mapping_overrides(value, prefix=name + ".")
        elif "." not in name and name in _group_names() and isinstance(value, str):
            out.append(f"{name}={value}")  # a group choice: model=tiny
        else:
            out.append(f"{name}={hydra_value(value)}")
    return out


def _group_names() -> tuple[str, ...]:
    from dualpar.reference import GROUPS

    return GROUPS


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar: strings are quoted (commas, spaces and brackets stay text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"cannot pass a {type(value).__name__} as a config value: {value!r}")


# ---- composition ----------------------------------------------------------------------------------------------


def compose(overrides: Sequence[str]) -> dict[str, Any]:
    """The composed config for `overrides` (as the `dualpar` command builds it), as a plain dict. Hydra's own
    errors (bad override syntax, an unknown group option or key) become ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (the driver): same config package
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        else:
            with initialize_config_module(config_module="dualpar.conf", version_base="1.3"):
                cfg = hydra_compose(config_name="config", overrides=list(overrides))
        raw = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise hydra_error(err, overrides) from None
    raw.pop("hydra", None)
    return raw


def hydra_error(err: BaseException, overrides: Sequence[str]) -> ConfigError:
    """One clear ConfigError for what Hydra or OmegaConf rejected."""
    msg = str(err).strip()
    first = msg.splitlines()[0] if msg else type(err).__name__
    if m := re.search(r"Could not find '([^/']+)/([^']+)'", msg):
        group, option = m.groups()
        from dualpar.reference import group_options

        return ConfigError(group, f"has no option '{option}'", f"choose one of: {', '.join(group_options(group))}")
    if m := re.match(r"Could not override '([^']+)'", msg):
        key = m.group(1)
        return ConfigError(key, "is not a known option", _did_you_mean(key))
    if m := re.match(r"Could not delete from config. '([^']+)'", msg):
        return ConfigError(m.group(1), "is not a known option", _did_you_mean(m.group(1)))
    if m := re.match(r"Ambiguous value for argument '([^=']+)=(.*)'", msg):
        key, value = m.groups()
        return ConfigError(
            key,
            f"the value {value} has a comma, which Hydra reads as a list or a sweep",
            f"quote it as one string: {key}=\"'{value}'\" (or write a list: {key}=[a,b])",
        )
    if "override" in msg.lower() or type(err).__name__ == "OverrideParseException":
        bad = _unparsable(overrides)
        return ConfigError(
            bad or "override",
            f"cannot be parsed ({first})",
            "write key=value; quote values with spaces, commas or brackets: key=\"'...'\"",
        )
    key = getattr(err, "full_key", None) or "config"
    return ConfigError(str(key), first.rstrip("."), HELP_HINT)


def _unparsable(overrides: Sequence[str]) -> str | None:
    """The first override Hydra's parser rejects."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except Exception:
            return o
    return None


def _did_you_mean(key: str) -> str:
    import difflib

    from dualpar.reference import documented_keys

    close = difflib.get_close_matches(key, sorted(documented_keys()), n=1, cutoff=0.6)
    return (f"did you mean {close[0]}? " if close else "") + HELP_HINT
