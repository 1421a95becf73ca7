"""Compose real job configs (through Hydra, as the CLI does) and run them in-process."""

from __future__ import annotations

from pathlib import Path

import torch

from dualpar.cli import prepare


def compose(overrides: list[str]) -> dict:
    """The CLI's composed config for `overrides`, as a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    if not any(o.startswith(("model=", "model.path=")) for o in overrides):
        overrides = ["model=tiny", *overrides]  # tests run the tiny preset unless they name a model
    with initialize_config_module(config_module="dualpar.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


def render(out_dir: Path, overrides: list[str]) -> dict:
    """Validate and run a job like the CLI does; returns rank 0's report."""
    from dualpar.launch.launchers import launch

    cfg, _ = prepare(compose([f"output.dir={out_dir}", "output.progress=false", *overrides]))
    report = launch(cfg)
    assert report is not None
    return report


def load_latents(out_dir: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(Path(out_dir) / "latents.safetensors"))["latents"]
