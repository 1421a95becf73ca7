"""Clustered (SVG-EAR / SVG2) backend: exactness limits, compensation, routing, determinism, warm start."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dualpar.attention.clustered as clustered_mod
from dualpar.attention.clustered import ClusteredAttention
from dualpar.attention.config import AttentionConfig
from dualpar.attention.dense import DenseAttention
from dualpar.attention.execute import execute
from dualpar.attention.plan import make_plan, token_mask
from dualpar.attention.synthetic import clustered_qkv, make_call, rel_l2

torch.set_num_threads(1)

Q_GRID, KV_GRID = (2, 8, 8), (3, 8, 8)  # Q = 128, K = 192: cached right-context keys appended
CALL = make_call(q_grid=Q_GRID, kv_grid=KV_GRID)


def backend(**kw) -> ClusteredAttention:
    kw.setdefault("centroid_init", "cold")
    kw.setdefault("impl", "reference")
    return ClusteredAttention(AttentionConfig(backend="clustered", **kw))


def qkv(dtype=torch.float32, seed=0, dim=32):
    return clustered_qkv(2, 2, 128, 192, dim, seed=seed, dtype=dtype)


def test_dense_matches_explicit_softmax_fp64():
    q, k, v = qkv(torch.float64)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, dim=-1) @ v
    assert (DenseAttention()(q, k, v, CALL) - ref).abs().max() < 1e-12


@pytest.mark.parametrize("routing", ["error_aware", "score"])
@pytest.mark.parametrize("compensation", [True, False])
def test_keep_all_equals_dense(routing, compensation):
    q, k, v = qkv()
    out = backend(density=1.0, routing=routing, compensation=compensation)(q, k, v, CALL)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5


def test_keep_all_fp64_and_top_p_one():
    q, k, v = qkv(torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert (backend(density=1.0)(q, k, v, CALL) - ref).abs().max() < 1e-12
    out = backend(routing="top_p", top_p=1.0, min_kc_ratio=1.0)(q, k, v, CALL)
    assert (out - ref).abs().max() < 1e-12


def test_keep_all_with_arbitrary_labels():
    q, k, v = qkv()
    gen = torch.Generator().manual_seed(1)
    q_lab = torch.randint(0, 5, (2, 2, 128), generator=gen)
    k_lab = torch.randint(0, 7, (2, 2, 192), generator=gen)
    plan = make_plan(q_lab, k_lab, torch.ones(2, 2, 5, 7, dtype=torch.bool), 32**-0.5)
    out, lse = execute(plan, q, k, v)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5
    assert (lse - torch.logsumexp(q @ k.transpose(-1, -2) * 32**-0.5, -1)).abs().max() < 1e-5


def _constant_cluster_qkv(groups: int = 4):
    """Keys and values identical within each of `groups` groups; queries random."""
    gen = torch.Generator().manual_seed(3)
    assign = torch.randint(0, groups, (2, 2, 192), generator=gen)
    k = torch.randn(2, 2, groups, 32, generator=gen).gather(2, assign[..., None].expand(-1, -1, -1, 32))
    v = torch.randn(2, 2, groups, 32, generator=gen).gather(2, assign[..., None].expand(-1, -1, -1, 32))
    return torch.randn(2, 2, 128, 32, generator=gen), k, v


@pytest.mark.parametrize("density", [0.0, 0.05, 0.25])
def test_compensation_exact_on_constant_clusters(density):
    q, k, v = _constant_cluster_qkv()
    out = backend(density=density)(q, k, v, CALL)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5


def test_drop_at_zero_density_gives_zero_not_nan():
    q, k, v = _constant_cluster_qkv()
    out = backend(density=0.0, compensation=False)(q, k, v, CALL)
    assert torch.isfinite(out).all() and out.abs().max() == 0


@pytest.mark.parametrize("routing", ["error_aware", "score", "top_p"])
def test_singleton_key_clusters_equal_dense(routing):
    q, k, v = clustered_qkv(1, 2, 64, 96, 16, noise=1.0)
    call = make_call(branches=("cond",), q_grid=(1, 8, 8), kv_grid=(3, 4, 8))
    out = backend(num_k_clusters=96, density=0.1, routing=routing)(q, k, v, call)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5


def test_routing_is_nested_and_error_non_increasing():
    q, k, v = qkv()
    ref = F.scaled_dot_product_attention(q, k, v)
    prev_kept, prev_err = None, float("inf")
    for density in (0.05, 0.1, 0.25, 0.5, 1.0):
        be = backend(density=density)
        plan = be.route(q, k, CALL)
        err = rel_l2(be.execute(plan, q, k, v)[0], ref)
        achieved = plan.pairs_computed(2, 2) / (2 * 2 * 128 * 192)
        assert achieved <= density + 1e-9
        if prev_kept is not None:
            assert not (prev_kept & ~plan.kept_BHAC).any(), f"density {density} dropped a kept block"
        assert err <= prev_err + 1e-6
        prev_kept, prev_err = plan.kept_BHAC, err


def test_error_aware_beats_score_beats_drop():
    q, k, v = qkv()
    ref = F.scaled_dot_product_attention(q, k, v)

    def err(**kw) -> float:
        return rel_l2(backend(**kw)(q, k, v, CALL), ref)

    ear, score, drop = err(density=0.1), err(density=0.1, routing="score"), err(density=0.1, routing="score",
                                                                                compensation=False)
    assert ear <= score <= drop, (ear, score, drop)
    for density in (0.25, 0.5):
        assert err(density=density) <= err(density=density, compensation=False)


def test_cached_keys_exact_keeps_those_columns():
    q, k, v = qkv()
    be = backend(cache_keys="exact", density=0.4)
    plan = be.route(q, k, CALL)
    mask = token_mask(plan)
    assert mask[..., 128:].all()
    assert plan.pairs_computed(2, 2) <= 0.4 * 2 * 2 * 128 * 192
    out = be.execute(plan, q, k, v)[0]
    assert torch.isfinite(out).all()
    full = backend(cache_keys="exact", density=1.0)(q, k, v, CALL)
    assert (full - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5


def test_tail_call_without_cache_and_empty_clusters():
    q = torch.randn(2, 2, 1, 16).expand(-1, -1, 64, -1).contiguous()  # one distinct query: empty clusters
    k = torch.randn(2, 2, 4, 16).repeat_interleave(16, dim=2)
    v = torch.randn(2, 2, 64, 16)
    call = make_call(q_grid=(1, 8, 8))
    out = backend(density=0.25)(q, k, v, call)
    assert torch.isfinite(out).all()
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5  # keys constant per cluster: exact


def test_same_call_twice_and_two_instances_agree():
    q, k, v = qkv()
    for mode in ("cold", "per_block"):
        a, b = backend(centroid_init=mode), backend(centroid_init=mode)
        assert torch.equal(a(q, k, v, CALL), a(q, k, v, CALL))
        # A pipeline-like sequence: two iterations, blocks at different steps, several layers.
        outs_a, outs_b = [], []
        for it in range(3):
            for be, outs in ((a, outs_a), (b, outs_b)):
                be.begin_iteration()
                for block in range(max(0, it - 1), it + 1):
                    for layer in (0, 1):
                        call = make_call(layer=layer, block=block, step=it - block, q_grid=Q_GRID,
                                         kv_grid=KV_GRID, seed=7)
                        qq, kk, vv = qkv(seed=100 * it + 10 * block + layer)
                        outs.append(be(qq, kk, vv, call))
        assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b))


def test_cfg_split_rows_agree_with_batched_call():
    q, k, v = qkv()
    be = backend(centroid_init="per_block")
    both = be(q, k, v, CALL)
    split = [backend(centroid_init="per_block")(q[i:i + 1], k[i:i + 1], v[i:i + 1],
                                               make_call(branches=(name,), q_grid=Q_GRID, kv_grid=KV_GRID))
             for i, name in enumerate(("cond", "uncond"))]
    assert torch.equal(both, torch.cat(split))  # per-branch clustering: cfg_split on and off agree bitwise


def _spy_kmeans(monkeypatch):
    seen = []
    real = clustered_mod.kmeans

    def spy(x, init, iters, chunk_elems=1 << 26):
        res = real(x, init, iters, chunk_elems)
        seen.append((init.clone(), iters, res.centroids_RCD.clone()))
        return res

    monkeypatch.setattr(clustered_mod, "kmeans", spy)
    return seen


def test_per_block_warm_start_uses_previous_step(monkeypatch):
    seen = _spy_kmeans(monkeypatch)
    be = backend(centroid_init="per_block", kmeans_iters=5, kmeans_iters_warm=2)
    q, k, v = qkv()
    be(q, k, v, make_call(block=3, step=0, q_grid=Q_GRID, kv_grid=KV_GRID))
    step0 = list(seen)
    seen.clear()
    q2, k2, v2 = qkv(seed=1)
    be(q2, k2, v2, make_call(block=3, step=1, q_grid=Q_GRID, kv_grid=KV_GRID))
    assert [it for _, it, _ in step0] == [5] * 4 and [it for _, it, _ in seen] == [2] * 4
    for (init, _, _), (_, _, final) in zip(seen, step0):
        assert torch.equal(init, final)  # q then k, per branch
    seen.clear()
    be(q2, k2, v2, make_call(block=4, step=1, q_grid=Q_GRID, kv_grid=KV_GRID))  # no state: cold
    assert [it for _, it, _ in seen] == [5] * 4


def test_neighbour_warm_start_resets_each_iteration(monkeypatch):
    seen = _spy_kmeans(monkeypatch)
    be = backend(centroid_init="neighbour", kmeans_iters=5, kmeans_iters_warm=1)
    q, k, v = qkv()
    be(q, k, v, make_call(block=2, q_grid=Q_GRID, kv_grid=KV_GRID))
    be(q, k, v, make_call(block=1, step=1, q_grid=Q_GRID, kv_grid=KV_GRID))
    be.begin_iteration()
    be(q, k, v, make_call(block=3, q_grid=Q_GRID, kv_grid=KV_GRID))
    assert [it for _, it, _ in seen] == [5] * 4 + [1] * 4 + [5] * 4


def test_warm_state_is_bounded():
    be = backend(centroid_init="per_block", max_cached_blocks=64)
    q, k, v = clustered_qkv(2, 1, 16, 16, 8)
    steps = 3
    for it in range(8):
        be.begin_iteration()
        assert len(be.cache.blocks()) <= steps
        for block in range(max(0, it - steps + 1), it + 1):
            be(q, k, v, make_call(block=block, step=it - block, num_steps=steps, q_grid=(1, 4, 4)))
    assert be.cache.num_entries() <= steps * 2 * 2  # blocks in flight x branches x (step, step-1)
    lru = backend(centroid_init="per_block", max_cached_blocks=2)
    for block in range(5):
        lru(q, k, v, make_call(block=block, num_steps=50, q_grid=(1, 4, 4)))
    assert lru.cache.blocks() == (3, 4)


def test_stats_report_density_and_overhead():
    q, k, v = qkv()
    be = backend(density=0.25)
    be(q, k, v, CALL)
    be(q, k, v, make_call(layer=1, q_grid=Q_GRID, kv_grid=KV_GRID))
    st = be.stats()
    assert st.calls == 2 and st.pairs_dense == 2 * (2 * 2 * 128 * 192)
    assert 0.2 < st.density <= 0.25
    assert [(r["layer"], r["step"]) for r in st.per_call] == [(0, 0), (1, 0)]
    row = st.per_call[0]
    assert row["kmeans_flops"] > 0 and row["probe_flops"] > 0 and row["comp_flops"] > 0
    assert st.overhead_flops == sum(r["overhead_flops"] for r in st.per_call)


def test_branch_count_must_match_batch():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="branches"):
        backend()(q, k, v, make_call(branches=("cond",), q_grid=Q_GRID, kv_grid=KV_GRID))


def test_centroid_state_round_trips_through_state_dict():
    q, k, v = qkv()
    a = backend(centroid_init="per_block")
    a(q, k, v, make_call(block=2, step=0, q_grid=Q_GRID, kv_grid=KV_GRID))
    b = backend(centroid_init="per_block")
    b.cache.load_state_dict(a.cache.state_dict())
    nxt = make_call(block=2, step=1, q_grid=Q_GRID, kv_grid=KV_GRID)
    q2, k2, v2 = qkv(seed=4)
    assert torch.equal(a(q2, k2, v2, nxt), b(q2, k2, v2, nxt))
