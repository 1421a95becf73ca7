"""Shared fixtures: one thread per process (determinism and a fair share of a small machine)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The tiny preset written as a diffusers directory, loaded like a user's Wan checkpoint."""
    from dualpar.testing.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-wan")
