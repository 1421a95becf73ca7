"""The check every backbone and job kind repeats: the same job on several pipeline stages gives one stage's
latents bit for bit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dualpar.testing.jobs import compose, load_latents
from dualpar.testing.multi import spawn_jobs

# 2 even stages, then 3 uneven ones: the layouts the equality tests cover unless they say otherwise
LAYOUTS: tuple[tuple[int, tuple[str, ...]], ...] = ((2, ()), (3, ("parallel.split=[2,1,1]",)))


def assert_stages_equal(
    root: Path,
    overrides: Sequence[str],
    reference: torch.Tensor,
    layouts: Sequence[tuple[int, Sequence[str]]] = LAYOUTS,
) -> None:
    """Render `overrides` once per (stages, extra overrides) layout as spawned ranks, into `root/<stages>`, and
    assert that each run used that many stages and that its latents equal `reference` exactly."""
    from dualpar.cli import prepare

    for stages, extra in layouts:
        out = Path(root) / f"{stages}"
        over = [
            *overrides,
            *extra,
            f"parallel.stages={stages}",
            "launcher=spawn",
            f"output.dir={out}",
            "output.progress=false",
        ]
        (report,) = spawn_jobs([prepare(compose(over))[0]])
        assert report["plan"]["stages"] == stages
        got = load_latents(out)
        assert torch.equal(got, reference), f"{stages} stages {list(extra)}: max diff {(got - reference).abs().max()}"
