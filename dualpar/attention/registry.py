"""Backends keyed by name; optional kernels are imported only when their backend is built."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from dualpar.attention.base import AttentionBackend

# name -> "module:factory"; a factory takes the attention config (a mapping or dataclass) and returns a backend.
_BACKENDS: dict[str, str] = {
    "dense": "dualpar.attention.dense:build",
    "clustered": "dualpar.attention.clustered:build",
    "sliding_tile": "dualpar.attention.sliding_tile:build",
}


def register_backend(name: str, target: str) -> None:
    """Register `target` ("package.module:factory") under `name`."""
    _BACKENDS[name] = target


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(_BACKENDS))


def build_backend(name: str, cfg: Any = None) -> AttentionBackend:
    """Build the backend `name` from its config; unknown names raise with the list of known ones."""
    if name not in _BACKENDS:
        raise ValueError(f"attention={name!r} is unknown; choose one of {', '.join(available_backends())}")
    module_name, factory_name = _BACKENDS[name].split(":")
    factory: Callable[..., AttentionBackend] = getattr(importlib.import_module(module_name), factory_name)
    return factory(cfg)
