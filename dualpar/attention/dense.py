"""Dense attention through diffusers' attention dispatch: the reference every sparse backend must equal when it
keeps all, and the place a job picks its attention kernel (`attention.kernel`: native SDPA, flash, flash 3,
sage, ... whatever diffusers offers and this machine can run).

Routing through `diffusers.models.attention_dispatch.dispatch_attention_fn` rather than calling SDPA directly
means every kernel diffusers supports is one config value away, with diffusers' own argument handling; the
`native` kernel is PyTorch SDPA, so the default computes exactly what it did before.

Legend: B batch, H heads, Q queries, K keys, D head dim; the dispatch takes [B, S, H, D].
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import torch

from dualpar.attention.base import AttnCall, AttnStats
from dualpar.attention.config import AttentionConfig

DEFAULT_KERNEL = "native"
# Kernels that run on a CPU (the others need CUDA, or in diffusers' case raise there).
CPU_KERNELS = ("native", "_native_math", "_native_flash")


def kernel_names() -> tuple[str, ...]:
    """Every attention kernel name diffusers knows (`AttentionBackendName` values)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return tuple(b.value for b in AttentionBackendName)


@cache
def _installed(name: str) -> bool:
    """diffusers' own requirement check (packages and versions); hub kernels download code at run time and are
    never offered."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    if name.endswith("_hub"):
        return False
    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except (RuntimeError, ValueError):
        return False
    return True


def half_precision_only(name: str) -> bool:
    """Kernels diffusers constrains to bf16/fp16 inputs."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    checks = _AttentionBackendRegistry._constraints.get(AttentionBackendName(name), [])
    return any("dtype_bf16" in getattr(c, "__name__", "") for c in checks)


def available_kernels(device_type: str) -> tuple[str, ...]:
    """Kernels that can run here on `device_type` (cpu or cuda)."""
    names = [n for n in kernel_names() if _installed(n)]
    if device_type != "cuda":
        names = [n for n in names if n in CPU_KERNELS]
    elif not torch.cuda.is_available():
        names = []
    return tuple(names)


def kernel_problem(name: str, device_type: str, dtype: torch.dtype | None) -> str | None:
    """Why `attention.kernel=name` cannot run on `device_type` with `dtype` (None when it can)."""
    if name not in kernel_names():
        return f"unknown attention kernel {name!r}"
    if name not in available_kernels(device_type):
        return f"attention kernel {name!r} is not available on {device_type} here"
    if dtype is not None and dtype not in (torch.bfloat16, torch.float16) and half_precision_only(name):
        return f"attention kernel {name!r} needs bfloat16 or float16 inputs, not {str(dtype).removeprefix('torch.')}"
    return None


class DenseAttention:
    """Scaled-dot-product attention over every (query, key) pair, by the chosen diffusers kernel."""

    name = "dense"

    def __init__(self, kernel: str = DEFAULT_KERNEL) -> None:
        from diffusers.models.attention_dispatch import AttentionBackendName

        self.kernel = kernel
        self._backend = AttentionBackendName(kernel)
        self._stats = AttnStats()

    def __call__(
        self, q_BHQD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor, call: AttnCall
    ) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        b, h, q, _ = q_BHQD.shape
        pairs = b * h * q * k_BHKD.shape[2]
        self._stats.pairs_computed += pairs
        self._stats.pairs_dense += pairs
        self._stats.calls += 1
        out_BQHD = dispatch_attention_fn(
            q_BHQD.transpose(1, 2), k_BHKD.transpose(1, 2), v_BHKD.transpose(1, 2), backend=self._backend
        )
        return out_BQHD.transpose(1, 2)

    def begin_iteration(self) -> None:
        return None

    def stats(self) -> AttnStats:
        return self._stats


def build(cfg: AttentionConfig | Mapping[str, Any] | None = None) -> DenseAttention:
    """Registry factory, like every other backend's: dense attention with the kernel `cfg.kernel` names."""
    return DenseAttention(AttentionConfig.from_mapping(cfg).kernel)
