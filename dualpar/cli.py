"""The `dualpar` command: a Hydra app that validates a job, explains its plan, and launches it.

The composed config is converted once to a frozen EngineConfig; every bad option exits with code 2 and one
message naming the key and the fix, before any weights load.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from dualpar.config import EngineConfig
from dualpar.errors import ConfigError, PeerError
from dualpar.job import JobLayout
from dualpar.models.registry import read_model_info
from dualpar.validate import resolve_config, validate_config


def prepare(raw: Mapping[str, Any]) -> tuple[EngineConfig, JobLayout]:
    """Config mapping -> resolved, validated config and its layout (raises ConfigError)."""
    cfg = EngineConfig.from_mapping(raw)
    info = read_model_info(cfg.model.name, cfg.model.path, cfg.model.init_seed)
    cfg = resolve_config(cfg, info)
    validate_config(cfg, info)
    return cfg, JobLayout(cfg, info)


def run(raw: Mapping[str, Any]) -> int:
    """Validate, print the plan, launch; returns the process exit code."""
    from dualpar.planner import describe_plan

    try:
        cfg, job = prepare(raw)
    except ConfigError as err:
        print(f"dualpar: error: {err}", file=sys.stderr)
        return 2
    is_rank0 = cfg.launcher != "torchrun" or _torchrun_rank() == 0
    if is_rank0:
        print(describe_plan(job), file=sys.stderr)
        if cfg.cluster:
            from dualpar.planner import describe_cluster_estimate

            print(describe_cluster_estimate(job), file=sys.stderr)
    if cfg.plan_only:
        return 0
    from dualpar.launch.launchers import launch

    try:
        report = launch(cfg)
    except PeerError as err:
        print(f"dualpar: error: {err}", file=sys.stderr)
        return 1
    if report is not None:
        outs = ", ".join(f"{k}: {v}" for k, v in report["outputs"].items())
        print(
            f"dualpar: {report['frames_written']} frames, {report['blocks']} blocks in {report['wall_s']:.1f} s "
            f"-> {outs}",
            file=sys.stderr,
        )
    return 0


def _torchrun_rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path="pkg://dualpar.conf", config_name="config")
    def _app(dcfg) -> None:
        try:
            raw = OmegaConf.to_container(dcfg, resolve=True)
        except Exception as err:  # interpolation errors are user input errors
            print(f"dualpar: error: {err}", file=sys.stderr)
            sys.exit(2)
        sys.exit(run(raw))

    _app()


if __name__ == "__main__":
    main()
