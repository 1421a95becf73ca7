"""Bookkeeping of the work sparse backends do, aggregated per (layer, step, path).

Why aggregated: a long video makes millions of attention calls; one entry per (layer, step, path) keeps the
table bounded by layers x steps x 2 while still answering the spec's cost questions (section 10): density
over sparse calls and over all calls, and overhead FLOPs by kind (k-means, probe, compensation).
"""

from __future__ import annotations

from dataclasses import replace

from dualpar.attention.base import AttnCall, AttnStats

OVERHEAD_KINDS = ("kmeans_flops", "probe_flops", "comp_flops")


class StatsBook:
    """Totals plus a per-(layer, step, path) table that `snapshot()` returns as `AttnStats.per_call`."""

    def __init__(self) -> None:
        self._total = AttnStats()
        self._table: dict[tuple[int, int, str], dict] = {}

    def record(self, call: AttnCall, path: str, pairs: int, dense_pairs: int,
               overhead: dict[str, int] | None = None, tile_density: float | None = None) -> None:
        overhead = overhead or {}
        spent = sum(int(overhead.get(kind, 0)) for kind in OVERHEAD_KINDS)
        self._total.pairs_computed += int(pairs)
        self._total.pairs_dense += int(dense_pairs)
        self._total.overhead_flops += spent
        self._total.calls += 1
        key = (call.layer, call.step, path)
        row = self._table.setdefault(key, {"layer": call.layer, "step": call.step, "path": path, "calls": 0,
                                           "pairs": 0, "dense_pairs": 0, "overhead_flops": 0,
                                           **{kind: 0 for kind in OVERHEAD_KINDS}})
        row["calls"] += 1
        row["pairs"] += int(pairs)
        row["dense_pairs"] += int(dense_pairs)
        row["overhead_flops"] += spent
        for kind in OVERHEAD_KINDS:
            row[kind] += int(overhead.get(kind, 0))
        row["density"] = row["pairs"] / row["dense_pairs"] if row["dense_pairs"] else 1.0
        if tile_density is not None:
            n = row["calls"]
            row["tile_density"] = (row.get("tile_density", 0.0) * (n - 1) + tile_density) / n

    def snapshot(self) -> AttnStats:
        rows = [dict(self._table[k]) for k in sorted(self._table)]
        return replace(self._total, per_call=rows)


def merge_stats(*parts: AttnStats) -> AttnStats:
    """Sum of several backends' stats (e.g. the sparse and dense halves of a policy)."""
    out = AttnStats()
    for part in parts:
        out.pairs_computed += part.pairs_computed
        out.pairs_dense += part.pairs_dense
        out.overhead_flops += part.overhead_flops
        out.calls += part.calls
        out.per_call.extend(part.per_call)
    out.per_call.sort(key=lambda r: (r.get("layer", -1), r.get("step", -1), r.get("path", "")))
    return out


def dense_flops(stats: AttnStats, head_dim: int) -> int:
    """Dense attention FLOPs of the recorded calls: 4 D per (query, key) pair (pairs already count B and H)."""
    return 4 * head_dim * stats.pairs_dense
