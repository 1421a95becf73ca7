"""Typed, validated settings of the DiT self-attention backends (the Hydra group `attention`).

One frozen dataclass holds the keys of every backend so that a job validates its attention settings once, on
every stage alike (SPARSE_ATTENTION.md section 6), and so a bad value fails before any model is loaded. Defaults
are the small CPU-test values; GPU starting points are listed in `conf/attention/*.yaml` comments and the spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ROUTINGS = ("error_aware", "top_p", "score")
IMPLS = ("reference", "flex", "auto")
CENTROID_INITS = ("per_block", "neighbour", "cold")
RATIOS = ("per_key", "per_pair")
BUDGET_SCOPES = ("head", "row")
CACHE_KEYS = ("cluster", "exact")


def _fail(key: str, value: Any, fix: str) -> None:
    raise ValueError(f"attention.{key}={value!r} is invalid: {fix}")


def _as_tuple(value: Any) -> tuple | None:
    """Any non-string sequence (list, tuple, Hydra ListConfig) as a tuple; None otherwise."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None
    return tuple(value)


def _triple(key: str, value: Any) -> tuple[int, int, int]:
    vals = _as_tuple(value) or ()
    if len(vals) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in vals):
        _fail(key, value, "give three positive integers (t, h, w), e.g. [1, 8, 16]")
    return vals  # type: ignore[return-value]


@dataclass(frozen=True)
class AttentionConfig:
    """Every key of the `attention` config group; unknown keys and bad values raise ValueError."""

    # Which backend runs DiT self-attention: dense | clustered | sliding_tile (or anything registered).
    backend: str = "dense"
    # Kernel of every dense attention call (diffusers' attention dispatch, `AttentionBackendName`): native
    # (PyTorch SDPA), flash, _flash_3, sage, ... (checked against this machine when a job is validated).
    kernel: str = "native"

    # --- clustered (SVG-EAR / SVG2) ---
    # Query clusters per (row, head), Cq; clamped to the query count. GPU start: 256.
    num_q_clusters: int = 8
    # Key clusters per (row, head), Ck; clamped to the key count. GPU start: 1024 (K/256 on flex tiles).
    num_k_clusters: int = 32
    # k-means iterations from a cold (seeded) initialisation. GPU start: 50.
    kmeans_iters: int = 5
    # k-means iterations after a warm start from cached centroids (SVG2 uses 2).
    kmeans_iters_warm: int = 2
    # Warm-start state: per_block (block, layer, branch; step s starts from step s-1), neighbour (previous call
    # on the same layer and branch, reset each iteration), or cold (stateless).
    centroid_init: str = "per_block"
    # Bound on the per_block state: at most this many distinct blocks are kept (least recently used dropped).
    max_cached_blocks: int = 64
    # Budget of computed (query, key) pairs as a fraction of Q*K (error_aware and score routing).
    density: float = 0.25
    # error_aware (SVG-EAR greedy by probe error / cost), top_p (SVG2 cumulative centroid mass per query
    # cluster; density is an outcome) or score (greedy by centroid mass / cost under `density`).
    routing: str = "error_aware"
    # top_p routing: cumulative centroid attention mass each query cluster keeps.
    top_p: float = 0.9
    # top_p routing: each query cluster keeps at least ceil(min_kc_ratio * Ck) key clusters.
    min_kc_ratio: float = 0.1
    # Add skipped key clusters back through their centroids (SVG-EAR); false drops them (SVG2).
    compensation: bool = True
    # [R] Divide each probe error by the query centroid's partition sum Z before routing.
    normalise_error: bool = True
    # [R] Probe error power: 1 sums |exp gap|, 2 sums squared gaps.
    error_power: int = 1
    # [R] Routing ratio: per_key (error / |c|) or per_pair (error / (|a| |c|)).
    ratio: str = "per_key"
    # [R] Budget scope: one budget per head (head) or one per query cluster (row).
    budget_scope: str = "head"
    # cluster: cached right-context keys are clustered with the rest; exact: they are always attended exactly.
    cache_keys: str = "cluster"

    # --- sliding_tile (STA) ---
    # Tile of latent tokens (t, h, w); t must divide the window's frame counts. GPU: 128 tokens, e.g. (1, 8, 16).
    tile_size: tuple[int, int, int] = (1, 2, 2)
    # Key-tile window (t, h, w) around each query tile, in tiles, clamped inside the key grid.
    window: tuple[int, int, int] = (3, 3, 3)

    # --- policy ---
    # First steps of every block that run dense: an integer count, or a fraction of the steps if below 1.
    dense_steps: float = 0
    # Global DiT layer indices that always run dense.
    dense_layers: tuple[int, ...] = ()
    # Calls with fewer than this many (query, key) pairs run dense.
    min_pairs: int = 0

    # --- execution ---
    # reference (pure PyTorch, exact), flex (torch flex_attention from tile-level block masks), auto (flex on CUDA).
    impl: str = "auto"
    # Tile edge of the flex block mask, in tokens.
    flex_block_size: int = 128
    # Memory bound for materialised score chunks (elements) in the reference, probe and k-means paths.
    chunk_elems: int = 1 << 26

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile_size", _triple("tile_size", self.tile_size))
        object.__setattr__(self, "window", _triple("window", self.window))
        layers = _as_tuple(self.dense_layers)
        if layers is None or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers):
            _fail("dense_layers", self.dense_layers, "give a list of non-negative global layer indices, e.g. [0]")
        object.__setattr__(self, "dense_layers", tuple(sorted(set(layers))))
        self._check_choices()
        self._check_numbers()

    def _check_choices(self) -> None:
        for key, allowed in (("routing", ROUTINGS), ("impl", IMPLS), ("centroid_init", CENTROID_INITS),
                             ("ratio", RATIOS), ("budget_scope", BUDGET_SCOPES), ("cache_keys", CACHE_KEYS)):
            if getattr(self, key) not in allowed:
                _fail(key, getattr(self, key), f"choose one of {', '.join(allowed)}")
        if not isinstance(self.kernel, str) or not self.kernel:
            _fail("kernel", self.kernel, "name a diffusers attention kernel, e.g. native, flash, _flash_3, sage")
        if not isinstance(self.backend, str) or not self.backend:
            _fail("backend", self.backend, "name a registered backend, e.g. dense, clustered, sliding_tile")
        for key in ("compensation", "normalise_error"):
            if not isinstance(getattr(self, key), bool):
                _fail(key, getattr(self, key), "use true or false")

    def _check_numbers(self) -> None:
        positive = ("num_q_clusters", "num_k_clusters", "kmeans_iters", "max_cached_blocks", "flex_block_size",
                    "chunk_elems")
        for key in positive:
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                _fail(key, val, "use an integer >= 1")
        for key in ("kmeans_iters_warm", "min_pairs"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                _fail(key, val, "use an integer >= 0")
        if not 0.0 <= float(self.density) <= 1.0:
            _fail("density", self.density, "use a fraction of Q*K in [0, 1], e.g. 0.25")
        if not 0.0 < float(self.top_p) <= 1.0:
            _fail("top_p", self.top_p, "use a cumulative probability in (0, 1], e.g. 0.9")
        if not 0.0 <= float(self.min_kc_ratio) <= 1.0:
            _fail("min_kc_ratio", self.min_kc_ratio, "use a fraction of Ck in [0, 1], e.g. 0.1")
        if self.error_power not in (1, 2):
            _fail("error_power", self.error_power, "use 1 (absolute gaps) or 2 (squared gaps)")
        ds = self.dense_steps
        if isinstance(ds, bool) or not isinstance(ds, (int, float)) or ds < 0 or (ds >= 1 and ds != int(ds)):
            _fail("dense_steps", ds, "use a step count >= 0 (integer) or a fraction of the steps below 1, e.g. 0.2")

    def dense_step_count(self, num_steps: int) -> int:
        """First steps of a block that run dense: a count, or floor(fraction * num_steps) below 1."""
        ds = self.dense_steps
        return int(ds) if ds >= 1 or ds == 0 else int(math.floor(ds * num_steps))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | AttentionConfig | None) -> AttentionConfig:
        """Build from a dict or Hydra DictConfig; unknown keys raise naming the key."""
        if data is None:
            return cls()
        if isinstance(data, AttentionConfig):
            return data
        known = {f.name for f in fields(cls)}
        items = dict(data.items())
        for key in items:
            if key not in known:
                _fail(key, items[key], f"unknown key; known keys: {', '.join(sorted(known))}")
        return cls(**items)
