"""Clustered sparse attention in the style of SVG-EAR (and SVG2 with `routing=top_p`, `compensation=false`).

Why: video DiT attention concentrates on semantically similar tokens. Queries and keys are clustered per
(batch row, head) with k-means, the Q x K map becomes a grid of (query cluster, key cluster) blocks, a probe
measures how badly each block would be approximated by its key centroid, and the blocks with the largest
error per unit of cost are computed exactly under a density budget. Skipped blocks are added back through
their centroids (compensation), and the two parts merge as one softmax (SPARSE_ATTENTION.md section 2).

Routing (`route`) is kept apart from execution (`execute`) so one plan can be fed to every implementation.
All routing decisions depend only on this call's q, k and plan fields (plus warm-start state keyed by plan
fields), so every pipeline stage that owns a layer decides identically.

Tensor legend: B batch rows, H heads, Q queries, K keys, D head dim, A query clusters, C key clusters,
R = B*H rows.
"""

from __future__ import annotations

import math

import torch

from dualpar.attention.base import AttnCall, AttnStats
from dualpar.attention.centroid_cache import CentroidCache
from dualpar.attention.config import AttentionConfig
from dualpar.attention.execute import compensation_flops, run_plan
from dualpar.attention.kmeans import KMeansResult, kmeans, kmeans_flops, seeded_init, stable_seed
from dualpar.attention.plan import Plan, make_plan
from dualpar.attention.routing import (
    budget_route,
    centroid_mass,
    error_ratio,
    probe_error,
    top_p_route,
)
from dualpar.attention.stats import StatsBook

Tensor = torch.Tensor


def check_call(q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor | None, call: AttnCall) -> None:
    """Shape checks every sparse backend shares; these are caller errors, so ValueError."""
    if q_BHQD.dim() != 4 or k_BHKD.dim() != 4 or q_BHQD.shape[:2] != k_BHKD.shape[:2]:
        raise ValueError(f"attention expects q [B,H,Q,D] and k [B,H,K,D] with equal B, H; got "
                         f"{tuple(q_BHQD.shape)} and {tuple(k_BHKD.shape)}")
    if v_BHKD is not None and v_BHKD.shape[:3] != k_BHKD.shape[:3]:
        raise ValueError(f"v {tuple(v_BHKD.shape)} must match k {tuple(k_BHKD.shape)} in B, H, K")
    if k_BHKD.shape[2] < q_BHQD.shape[2]:
        raise ValueError(f"K={k_BHKD.shape[2]} < Q={q_BHQD.shape[2]}: keys must hold the window's own tokens "
                         "first, then any cached right-context keys")
    if len(call.branches) != q_BHQD.shape[0]:
        raise ValueError(f"call.branches={call.branches} names {len(call.branches)} rows but the batch has "
                         f"{q_BHQD.shape[0]}; pass one branch name per batch row")


class ClusteredAttention:
    """SVG-EAR-style clustered attention with error-aware routing and centroid compensation."""

    name = "clustered"

    def __init__(self, cfg: AttentionConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else AttentionConfig(backend="clustered")
        self.cache = CentroidCache(self.cfg.centroid_init, self.cfg.max_cached_blocks)
        self._book = StatsBook()

    # ----- routing -----
    def _cluster(self, x_HND: Tensor, num: int, call: AttnCall, branch: str, role: str,
                 warm: Tensor | None) -> tuple[KMeansResult, int]:
        if warm is not None and warm.shape == (x_HND.shape[0], num, x_HND.shape[-1]):
            init, iters = warm.to(x_HND.device), self.cfg.kmeans_iters_warm
        else:
            seed = stable_seed(call.seed, call.block, call.layer, branch, role)
            init, iters = seeded_init(x_HND.float(), num, seed), self.cfg.kmeans_iters
        res = kmeans(x_HND, init, iters, self.cfg.chunk_elems)
        return res, kmeans_flops(x_HND.shape[0] * x_HND.shape[1], num, x_HND.shape[-1], iters)

    def _cluster_rows(self, q_BHQD: Tensor, k_BHKD: Tensor, call: AttnCall, num_a: int,
                      num_c: int) -> tuple[list[KMeansResult], list[KMeansResult], int]:
        """k-means row by row (per branch), so cfg_split on and off cluster identically."""
        q_res, k_res, flops = [], [], 0
        for row, branch in enumerate(call.branches):
            warm = self.cache.lookup(call, branch)
            qr, fq = self._cluster(q_BHQD[row], num_a, call, branch, "q", None if warm is None else warm[0])
            kr, fk = self._cluster(k_BHKD[row], num_c, call, branch, "k", None if warm is None else warm[1])
            # Stored in the input dtype (bf16 on GPU) to halve the per_block state; k-means runs in fp32.
            self.cache.store(call, branch, (qr.centroids_RCD.to(q_BHQD.dtype), kr.centroids_RCD.to(k_BHKD.dtype)))
            q_res.append(qr)
            k_res.append(kr)
            flops += fq + fk
        return q_res, k_res, flops

    def _select(self, qbar_RAD: Tensor, k_RKD: Tensor, kbar_RCD: Tensor, k_lab_RK: Tensor, q_sizes_RA: Tensor,
                k_sizes_RC: Tensor, scale: float, num_k: int, reserved: int) -> tuple[Tensor, int]:
        """Kept blocks [R, A, C] and the probe FLOPs spent choosing them."""
        cfg = self.cfg
        rows, num_a, dim = qbar_RAD.shape
        num_c = kbar_RCD.shape[1]
        flops = 2 * rows * num_a * num_c * dim
        if cfg.routing == "error_aware":
            err = probe_error(qbar_RAD, k_RKD, kbar_RCD, k_lab_RK, scale, cfg.normalise_error, cfg.error_power,
                              cfg.chunk_elems)
            ratio = error_ratio(err, q_sizes_RA, k_sizes_RC, cfg.ratio)
            flops += 2 * rows * num_a * k_RKD.shape[1] * dim
        else:
            mass = centroid_mass(qbar_RAD, kbar_RCD, k_sizes_RC, scale)
            if cfg.routing == "top_p":
                return top_p_route(mass, k_sizes_RC, cfg.top_p, cfg.min_kc_ratio), flops
            ratio = mass / k_sizes_RC[:, None, :].to(mass.dtype).clamp(min=1)
        kept = budget_route(ratio, q_sizes_RA, k_sizes_RC, cfg.density, num_k, reserved, cfg.budget_scope)
        return kept, flops

    def route(self, q_BHQD: Tensor, k_BHKD: Tensor, call: AttnCall) -> Plan:
        """Cluster, probe and select blocks; no attention output is computed here."""
        check_call(q_BHQD, k_BHKD, None, call)
        cfg = self.cfg
        b, h, num_q, dim = q_BHQD.shape
        num_k = k_BHKD.shape[2]
        n_exact = num_k - num_q if cfg.cache_keys == "exact" else 0
        k_routed = k_BHKD[:, :, : num_k - n_exact]
        num_a, num_c = min(cfg.num_q_clusters, num_q), min(cfg.num_k_clusters, k_routed.shape[2])
        q_res, k_res, km_flops = self._cluster_rows(q_BHQD, k_routed, call, num_a, num_c)

        def stack(items: list[Tensor]) -> Tensor:
            return torch.stack(items).flatten(0, 1)  # [B, H, ...] -> [R, ...]

        q_lab, k_lab = stack([r.labels_RN for r in q_res]), stack([r.labels_RN for r in k_res])
        qbar, kbar = stack([r.centroids_RCD for r in q_res]), stack([r.centroids_RCD for r in k_res])
        q_sizes, k_sizes = stack([r.sizes_RC for r in q_res]), stack([r.sizes_RC for r in k_res])
        scale = 1.0 / math.sqrt(dim)
        k_flat = k_routed.flatten(0, 1).to(kbar.dtype)
        kept, probe_flops = self._select(qbar, k_flat, kbar, k_lab, q_sizes, k_sizes, scale, num_k,
                                         num_q * n_exact)
        valid = (q_sizes > 0)[:, :, None] & (k_sizes > 0)[:, None, :]
        comp = (~kept & valid) if cfg.compensation else None
        if n_exact:  # cached keys form one extra group, always kept exactly, never compensated
            k_lab = torch.cat([k_lab, torch.full((b * h, n_exact), num_c, dtype=k_lab.dtype,
                                                 device=k_lab.device)], dim=1)
            kept = torch.nn.functional.pad(kept, (0, 1), value=True)
            comp = None if comp is None else torch.nn.functional.pad(comp, (0, 1), value=False)
            kbar = torch.nn.functional.pad(kbar, (0, 0, 0, 1))

        def unflat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.reshape(b, h, *t.shape[1:])

        return make_plan(unflat(q_lab), unflat(k_lab), unflat(kept), scale, unflat(comp),
                         unflat(kbar) if cfg.compensation else None,
                         {"kmeans_flops": km_flops, "probe_flops": probe_flops})

    # ----- execution -----
    def execute(self, plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor,
                info: dict | None = None) -> tuple[Tensor, Tensor]:
        """Exact branch over kept blocks plus compensation, merged; output in model order (compute dtype)."""
        cfg = self.cfg
        return run_plan(plan, q_BHQD, k_BHKD, v_BHKD, cfg.impl, cfg.flex_block_size, cfg.chunk_elems, None, info)

    def __call__(self, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, call: AttnCall) -> Tensor:
        check_call(q_BHQD, k_BHKD, v_BHKD, call)
        plan = self.route(q_BHQD, k_BHKD, call)
        info: dict = {}
        out, _ = self.execute(plan, q_BHQD, k_BHKD, v_BHKD, info)
        b, h, num_q, dim = q_BHQD.shape
        overhead = dict(plan.overhead, comp_flops=compensation_flops(plan, b, h, num_q, dim))
        self._book.record(call, self.name, plan.pairs_computed(b, h), b * h * num_q * k_BHKD.shape[2],
                          overhead, info.get("tile_density"))
        return out.to(q_BHQD.dtype)

    def begin_iteration(self) -> None:
        self.cache.begin_iteration()

    def stats(self) -> AttnStats:
        return self._book.snapshot()


def build(cfg: AttentionConfig | None = None):
    """Registry factory: the clustered backend behind the dense-steps / dense-layers policy."""
    from dualpar.attention.policy import wrap_with_policy

    cfg = AttentionConfig.from_mapping(cfg) if cfg is not None else AttentionConfig(backend="clustered")
    return wrap_with_policy(ClusteredAttention(cfg), cfg)
