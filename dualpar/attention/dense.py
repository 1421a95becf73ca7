"""Dense attention through PyTorch SDPA: the reference every sparse backend must equal when it keeps all."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dualpar.attention.base import AttnCall, AttnStats


class DenseAttention:
    """Plain scaled-dot-product attention over every (query, key) pair."""

    name = "dense"

    def __init__(self) -> None:
        self._stats = AttnStats()

    def __call__(
        self, q_BHQD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor, call: AttnCall
    ) -> torch.Tensor:
        b, h, q, _ = q_BHQD.shape
        pairs = b * h * q * k_BHKD.shape[2]
        self._stats.pairs_computed += pairs
        self._stats.pairs_dense += pairs
        self._stats.calls += 1
        return F.scaled_dot_product_attention(q_BHQD, k_BHKD, v_BHKD, dropout_p=0.0, is_causal=False)

    def begin_iteration(self) -> None:
        return None

    def stats(self) -> AttnStats:
        return self._stats
