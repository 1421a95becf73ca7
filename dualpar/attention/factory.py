"""Turn the job's `attention` config into one backend per DiT layer (what each stage installs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dualpar.attention.base import AttentionBackend
from dualpar.attention.config import AttentionConfig
from dualpar.attention.registry import build_backend


def attention_factory(attention: Mapping[str, Any]) -> Callable[[int], AttentionBackend]:
    """`attention.backend` picks the backend from the registry (dense included: `attention.kernel` is its
    option), the other keys are the backend's options (dualpar.attention.config)."""
    cfg = AttentionConfig.from_mapping(attention)
    return lambda layer: build_backend(cfg.backend, cfg)
