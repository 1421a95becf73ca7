"""The call every DiT self-attention backend sees (SPARSE_ATTENTION.md section 1).

Tensor legend: B batch rows (cond, uncond), H heads, Q query tokens, K key tokens, D head dim.
Queries are the window's (P+C)*tpf tokens in frame-major (t, h, w) order; keys may carry C*tpf extra
tokens from the stage's feature cache (window-local frames P+C .. P+2C-1). Keys arrive after K-norm and RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class AttnCall:
    """Where a call sits in the shared block plan. Every field comes from the plan, never from stage-local
    counters, so every stage makes the same decisions for the same call."""

    layer: int
    block: int
    step: int
    num_steps: int
    branches: tuple[str, ...]
    q_grid: tuple[int, int, int]
    kv_grid: tuple[int, int, int]
    seed: int


@dataclass
class AttnStats:
    """Work a backend did: pairs computed against dense pairs, and routing overhead FLOPs."""

    pairs_computed: int = 0
    pairs_dense: int = 0
    overhead_flops: int = 0
    calls: int = 0
    per_call: list[dict] = field(default_factory=list)

    @property
    def density(self) -> float:
        return self.pairs_computed / self.pairs_dense if self.pairs_dense else 1.0


class AttentionBackend(Protocol):
    """One interface for every DiT self-attention call; the output is in model token order."""

    name: str

    def __call__(
        self, q_BHQD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor, call: AttnCall
    ) -> torch.Tensor: ...

    def begin_iteration(self) -> None: ...

    def stats(self) -> AttnStats: ...
