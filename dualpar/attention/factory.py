"""Turn the job's `attention` config into one backend per DiT layer (what each stage installs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dualpar.attention.base import AttentionBackend


def attention_factory(attention: Mapping[str, Any]) -> Callable[[int], AttentionBackend]:
    """`attention.backend` picks the backend, `attention.kernel` the dense kernel; the other keys are the
    backend's options (dualpar.attention.config)."""
    name = str(attention.get("backend", "dense"))
    if name == "dense":
        from dualpar.attention.dense import DEFAULT_KERNEL, DenseAttention

        kernel = str(attention.get("kernel", DEFAULT_KERNEL))
        return lambda layer: DenseAttention(kernel)
    from dualpar.attention.config import AttentionConfig
    from dualpar.attention.registry import build_backend

    cfg = AttentionConfig.from_mapping(attention)
    return lambda layer: build_backend(name, cfg)
