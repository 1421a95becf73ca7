"""Dense steps and dense layers around a sparse backend (SPARSE_ATTENTION.md section 5).

Why: early denoising steps fix the layout and the first layers have diffuse attention, so sparse methods keep
them dense. The decision is a pure function of the call's plan fields (its own step, the global layer) and
shapes, so every stage makes the same decision for the same call without talking to the others.
"""

from __future__ import annotations

import torch

from dualpar.attention.base import AttentionBackend, AttnCall, AttnStats
from dualpar.attention.config import AttentionConfig
from dualpar.attention.dense import DenseAttention
from dualpar.attention.stats import StatsBook, merge_stats

Tensor = torch.Tensor


class PolicyBackend:
    """Runs `dense` for the first dense steps of every block, for dense layers and for tiny calls; else `sparse`."""

    def __init__(self, sparse: AttentionBackend, dense: AttentionBackend | None = None, dense_steps: float = 0,
                 dense_layers: tuple[int, ...] = (), min_pairs: int = 0) -> None:
        self.sparse = sparse
        self.dense = dense if dense is not None else DenseAttention()
        self.name = sparse.name
        # Reuse AttentionConfig's validation and its count-or-fraction rule for dense_steps.
        self._cfg = AttentionConfig(dense_steps=dense_steps, dense_layers=tuple(dense_layers), min_pairs=min_pairs)
        self._dense_book = StatsBook()

    def runs_dense(self, call: AttnCall, num_q: int, num_k: int) -> bool:
        """Pure decision from plan fields and shapes."""
        return (call.step < self._cfg.dense_step_count(call.num_steps) or call.layer in self._cfg.dense_layers
                or num_q * num_k < self._cfg.min_pairs)

    def __call__(self, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, call: AttnCall) -> Tensor:
        b, h, num_q, _ = q_BHQD.shape
        num_k = k_BHKD.shape[2]
        if self.runs_dense(call, num_q, num_k):
            self._dense_book.record(call, "dense", b * h * num_q * num_k, b * h * num_q * num_k)
            return self.dense(q_BHQD, k_BHKD, v_BHKD, call)
        return self.sparse(q_BHQD, k_BHKD, v_BHKD, call)

    def begin_iteration(self) -> None:
        self.sparse.begin_iteration()
        self.dense.begin_iteration()

    def stats(self) -> AttnStats:
        """Both paths; per_call rows carry `path` (the sparse backend's name or "dense")."""
        return merge_stats(self.sparse.stats(), self._dense_book.snapshot())

    def sparse_stats(self) -> AttnStats:
        """Sparse calls only (the papers' density figure)."""
        return self.sparse.stats()


def wrap_with_policy(sparse: AttentionBackend, cfg: AttentionConfig) -> PolicyBackend:
    """Every registry-built sparse backend sits behind a policy (a pass-through when nothing runs dense)."""
    dense = DenseAttention(cfg.kernel)
    return PolicyBackend(sparse, dense, cfg.dense_steps, cfg.dense_layers, cfg.min_pairs)
