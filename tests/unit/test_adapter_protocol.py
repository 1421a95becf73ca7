"""The Wan stage is a `BackboneStage`: the runner, the av runner and the loader reach Wan only through it."""

from __future__ import annotations

import torch

from dualpar.models.adapter import BackboneStage
from dualpar.models.loader import build_stage
from dualpar.models.registry import builtin_info


def test_wan_stage_implements_the_backbone_adapter():
    info = builtin_info("tiny", 0)
    for first, last in ((True, False), (False, True)):
        stage = build_stage(info, range(0, 2), first, last, torch.float32, torch.device("cpu"))
        assert isinstance(stage, BackboneStage)


def test_runner_modules_do_not_import_wan():
    import ast
    from pathlib import Path

    import dualpar

    root = Path(dualpar.__file__).parent
    for name in ("runner.py", "av_runner.py"):
        tree = ast.parse((root / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "dualpar.models.wan" not in imported, name
