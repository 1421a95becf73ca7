"""Compose real job configs (through Hydra, as the CLI does) and run them in-process."""

from __future__ import annotations

from pathlib import Path

import torch

from dualpar.api import prepare


def compose(overrides: list[str]) -> dict:
    """The CLI's composed config for `overrides` (dualpar.api.compose), the tiny preset unless a model is named."""
    from dualpar.api import compose as api_compose

    if not any(o.startswith(("model=", "model.path=")) for o in overrides):
        overrides = ["model=tiny", *overrides]  # tests run the tiny preset unless they name a model
    return api_compose(overrides)


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
