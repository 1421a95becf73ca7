"""Structured random (q, k, v) for checking sparse attention: tokens drawn around a few centres.

Why: on structureless random data every block looks alike and routing proves nothing (spec section 8.7);
real video attention is dominated by a few semantic groups. Token order is shuffled so clusters are not
contiguous, which exercises the permutations.

Tensor legend: B batch rows, H heads, Q queries, K keys, D head dim, G groups.
"""

from __future__ import annotations

import torch

from dualpar.attention.base import AttnCall

Tensor = torch.Tensor


def clustered_qkv(batch: int, heads: int, num_q: int, num_k: int, dim: int, q_groups: int = 6,
                  k_groups: int = 24, spread: float = 1.5, noise: float = 0.3, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """q around `q_groups` centres, k and v around `k_groups` centres (v's centres are independent)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(groups: int, n: int) -> tuple[Tensor, Tensor]:
        centres_BHGD = torch.randn(batch, heads, groups, dim, generator=gen) * spread
        assign_BHN = torch.randint(0, groups, (batch, heads, n), generator=gen)
        idx = assign_BHN[..., None].expand(-1, -1, -1, dim)
        return centres_BHGD.gather(2, idx) + noise * torch.randn(batch, heads, n, dim, generator=gen), assign_BHN

    q_BHQD, _ = draw(q_groups, num_q)
    k_BHKD, k_assign_BHK = draw(k_groups, num_k)
    v_centres_BHGD = torch.randn(batch, heads, k_groups, dim, generator=gen)
    v_BHKD = v_centres_BHGD.gather(2, k_assign_BHK[..., None].expand(-1, -1, -1, dim))
    v_BHKD = v_BHKD + noise * torch.randn(batch, heads, num_k, dim, generator=gen)
    return q_BHQD.to(dtype), k_BHKD.to(dtype), v_BHKD.to(dtype)


def rel_l2(out: Tensor, ref: Tensor) -> float:
    """Relative L2 error ||out - ref|| / ||ref|| in fp64."""
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp(min=1e-30))


def make_call(layer: int = 0, block: int = 0, step: int = 0, num_steps: int = 4,
              branches: tuple[str, ...] = ("cond", "uncond"), q_grid: tuple[int, int, int] = (4, 8, 8),
              kv_grid: tuple[int, int, int] | None = None, seed: int = 0) -> AttnCall:
    """An AttnCall with test-friendly defaults (kv_grid defaults to q_grid: a tail call without cache)."""
    return AttnCall(layer=layer, block=block, step=step, num_steps=num_steps, branches=tuple(branches),
                    q_grid=tuple(q_grid), kv_grid=tuple(kv_grid or q_grid), seed=seed)
