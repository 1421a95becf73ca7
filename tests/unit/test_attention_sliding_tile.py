"""Sliding tile attention: mask against a brute-force token mask, full window = dense, grid checks."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from dualpar.attention.config import AttentionConfig
from dualpar.attention.plan import invert_perm, token_mask
from dualpar.attention.sliding_tile import SlidingTileAttention, sliding_tile_plan
from dualpar.attention.synthetic import make_call

torch.set_num_threads(1)


def brute_force_mask(q_grid, kv_grid, tile, window) -> torch.Tensor:
    """Token by token: query tile coordinate, window start clamped to the key grid, membership per axis."""
    k_tiles = [-(-g // s) for g, s in zip(kv_grid, tile)]
    mask = torch.zeros(len(list(itertools.product(*map(range, q_grid)))), len(list(
        itertools.product(*map(range, kv_grid)))), dtype=torch.bool)
    for i, qc in enumerate(itertools.product(*map(range, q_grid))):
        for j, kc in enumerate(itertools.product(*map(range, kv_grid))):
            inside = True
            for axis in range(3):
                qt, kt = qc[axis] // tile[axis], kc[axis] // tile[axis]
                start = min(max(qt - window[axis] // 2, 0), max(k_tiles[axis] - window[axis], 0))
                inside &= start <= kt < start + window[axis]
            mask[i, j] = inside
    return mask


@pytest.mark.parametrize("q_grid,kv_grid,tile,window", [
    ((2, 4, 4), (3, 4, 4), (1, 2, 2), (1, 1, 1)),
    ((2, 4, 6), (4, 4, 6), (1, 2, 2), (3, 1, 2)),
    ((4, 5, 3), (6, 5, 3), (2, 2, 2), (1, 3, 1)),  # partial tiles along h and w
    ((3, 4, 4), (3, 4, 4), (1, 1, 2), (2, 3, 5)),  # tail call, window larger than the grid along w
])
def test_mask_matches_brute_force(q_grid, kv_grid, tile, window):
    plan = sliding_tile_plan(q_grid, kv_grid, tile, window, 1.0)
    assert torch.equal(token_mask(plan)[0, 0], brute_force_mask(q_grid, kv_grid, tile, window))


def test_every_query_tile_sees_the_same_number_of_key_tiles():
    plan = sliding_tile_plan((4, 8, 8), (6, 8, 8), (1, 2, 2), (3, 3, 3), 1.0)
    per_tile = plan.kept_BHAC[0, 0].sum(-1)
    assert (per_tile == 27).all()


def _run(q_grid, kv_grid, tile, window, batch=2, heads=2, dim=16, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    nq, nk = q_grid[0] * q_grid[1] * q_grid[2], kv_grid[0] * kv_grid[1] * kv_grid[2]
    q = torch.randn(batch, heads, nq, dim, generator=gen, dtype=dtype)
    k = torch.randn(batch, heads, nk, dim, generator=gen, dtype=dtype)
    v = torch.randn(batch, heads, nk, dim, generator=gen, dtype=dtype)
    be = SlidingTileAttention(AttentionConfig(backend="sliding_tile", tile_size=tile, window=window,
                                              impl="reference"))
    call = make_call(branches=("cond", "uncond")[:batch], q_grid=q_grid, kv_grid=kv_grid)
    return be, be(q, k, v, call), q, k, v


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_full_window_equals_dense(dtype, tol):
    be, out, q, k, v = _run((2, 4, 4), (4, 4, 4), (1, 2, 2), (4, 2, 2), dtype=dtype)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < tol
    assert be.stats().density == 1.0


def test_small_window_matches_masked_dense_and_counts_pairs():
    q_grid, kv_grid, tile, window = (2, 4, 6), (3, 4, 6), (1, 2, 2), (1, 1, 3)
    be, out, q, k, v = _run(q_grid, kv_grid, tile, window)
    mask = brute_force_mask(q_grid, kv_grid, tile, window)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (out - ref).abs().max() < 1e-5
    st = be.stats()
    assert st.pairs_computed == 4 * int(mask.sum()) and st.pairs_dense == 4 * mask.numel()


def test_tile_permutation_round_trips():
    plan = sliding_tile_plan((2, 5, 3), (4, 5, 3), (2, 2, 2), (1, 1, 1), 1.0)
    perm = plan.q_perm_BHQ[0, 0]
    x = torch.arange(perm.numel())
    assert torch.equal(x[perm][invert_perm(plan.q_perm_BHQ)[0, 0]], x)
    sorted_labels = plan.q_labels_BHQ[0, 0][perm]
    assert (sorted_labels[1:] >= sorted_labels[:-1]).all()


def test_frames_must_be_divisible_by_tile_t():
    with pytest.raises(ValueError, match="tile_size"):
        _run((3, 4, 4), (5, 4, 4), (2, 2, 2), (1, 1, 1))
    with pytest.raises(ValueError, match="q_grid"):
        _run((2, 4, 4), (3, 4, 5), (1, 2, 2), (1, 1, 1))
