"""Sliding tile attention (STA, arXiv 2502.04507): a static 3D window over tiles of latent tokens.

Why: a fixed local window in (t, h, w) removes most pairs with no routing cost, and because whole tiles are
kept or skipped, a tile-based kernel wastes nothing. The latent grid is cut into (tt, th, tw) tiles; each
query tile attends a window of (kt, kh, kw) key tiles whose position is clamped inside the key grid, so every
query tile sees as many key tiles as any other (SPARSE_ATTENTION.md section 4). Cached right-context frames
are simply more frames on the key grid (kv_grid has P+2C frames; queries sit on its first P+C frames). Edge
tiles along h and w may be partial; that equals padding to tile multiples with padded keys masked.

Tensor legend: B batch rows, H heads, Q queries, K keys, D head dim, N tokens of a grid, A query tiles,
C key tiles.
"""

from __future__ import annotations

import math

import torch

from dualpar.attention.base import AttnCall, AttnStats
from dualpar.attention.clustered import check_call
from dualpar.attention.config import AttentionConfig
from dualpar.attention.execute import resolve_impl, run_plan
from dualpar.attention.plan import Plan, make_plan
from dualpar.attention.stats import StatsBook

Tensor = torch.Tensor
Grid = tuple[int, int, int]


def tile_layout(grid: Grid, tile: Grid) -> tuple[Tensor, Grid]:
    """Tile-major label of every token of a frame-major (t, h, w) grid, and the tile counts per axis."""
    counts = tuple(-(-g // s) for g, s in zip(grid, tile))
    t, h, w = torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")
    label = ((t // tile[0]) * counts[1] + h // tile[1]) * counts[2] + w // tile[2]
    return label.reshape(-1), counts  # type: ignore[return-value]


def _axis_window(num_q: int, num_k: int, size: int) -> Tensor:
    """[num_q, num_k] bool: key tiles inside the window of each query tile along one axis (clamped)."""
    start = (torch.arange(num_q) - size // 2).clamp(min=0, max=max(num_k - size, 0))
    j = torch.arange(num_k)
    return (j[None, :] >= start[:, None]) & (j[None, :] < start[:, None] + size)


def window_kept(q_tiles: Grid, k_tiles: Grid, window: Grid) -> Tensor:
    """[A, C] bool: key tiles each query tile attends (the product of the three axis windows)."""
    wt, wh, ww = (_axis_window(q, k, s) for q, k, s in zip(q_tiles, k_tiles, window))
    kept = wt[:, None, None, :, None, None] & wh[None, :, None, None, :, None] & ww[None, None, :, None, None, :]
    return kept.reshape(math.prod(q_tiles), math.prod(k_tiles))


def check_grids(q_grid: Grid, kv_grid: Grid, tile: Grid, num_q: int, num_k: int) -> None:
    if math.prod(q_grid) != num_q or math.prod(kv_grid) != num_k:
        raise ValueError(f"q_grid {q_grid} / kv_grid {kv_grid} hold {math.prod(q_grid)} / {math.prod(kv_grid)} "
                         f"tokens but the call has Q={num_q}, K={num_k}")
    if tuple(q_grid[1:]) != tuple(kv_grid[1:]) or kv_grid[0] < q_grid[0]:
        raise ValueError(f"kv_grid {kv_grid} must extend q_grid {q_grid} along t only")
    if q_grid[0] % tile[0] or kv_grid[0] % tile[0]:
        raise ValueError(f"attention.tile_size[0]={tile[0]} must divide the window's frames {q_grid[0]} and "
                         f"{kv_grid[0]} (P+C and P+2C); choose a divisor of P and C")


def sliding_tile_plan(q_grid: Grid, kv_grid: Grid, tile: Grid, window: Grid, scale: float,
                      device: torch.device | str = "cpu") -> Plan:
    """The static plan of one (q_grid, kv_grid): labels are tiles, kept is the clamped window."""
    q_lab, q_tiles = tile_layout(q_grid, tile)
    k_lab, k_tiles = tile_layout(kv_grid, tile)
    kept = window_kept(q_tiles, k_tiles, window)
    return make_plan(q_lab.to(device)[None, None], k_lab.to(device)[None, None], kept.to(device)[None, None],
                     scale)


class SlidingTileAttention:
    """STA with a static window; plans and flex block masks are cached per (q_grid, kv_grid)."""

    name = "sliding_tile"

    def __init__(self, cfg: AttentionConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else AttentionConfig(backend="sliding_tile")
        self._plans: dict[tuple, Plan] = {}
        self._masks: dict[tuple, object] = {}
        self._book = StatsBook()

    def route(self, q_BHQD: Tensor, k_BHKD: Tensor, call: AttnCall) -> Plan:
        """The (cached) static plan for this call's grids; q and k values are not looked at."""
        check_grids(call.q_grid, call.kv_grid, self.cfg.tile_size, q_BHQD.shape[2], k_BHKD.shape[2])
        key = (tuple(call.q_grid), tuple(call.kv_grid), q_BHQD.shape[-1], str(q_BHQD.device))
        if key not in self._plans:
            scale = 1.0 / math.sqrt(q_BHQD.shape[-1])
            self._plans[key] = sliding_tile_plan(call.q_grid, call.kv_grid, self.cfg.tile_size, self.cfg.window,
                                                 scale, q_BHQD.device)
        return self._plans[key]

    def _block_mask(self, plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, call: AttnCall):
        if resolve_impl(self.cfg.impl, q_BHQD.device) != "flex":
            return None
        from dualpar.attention.flex import build_block_mask, tile_masks

        b, h, num_q, _ = q_BHQD.shape
        key = (tuple(call.q_grid), tuple(call.kv_grid), b, h, str(q_BHQD.device))
        if key not in self._masks:
            tm = tile_masks(plan, b, h, self.cfg.flex_block_size)
            self._masks[key] = build_block_mask(tm, num_q, k_BHKD.shape[2])
        return self._masks[key]

    def execute(self, plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor,
                block_mask=None) -> tuple[Tensor, Tensor]:
        """Exact attention over the window's tile pairs; output in model order (compute dtype)."""
        cfg = self.cfg
        return run_plan(plan, q_BHQD, k_BHKD, v_BHKD, cfg.impl, cfg.flex_block_size, cfg.chunk_elems, block_mask)

    def __call__(self, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, call: AttnCall) -> Tensor:
        check_call(q_BHQD, k_BHKD, v_BHKD, call)
        plan = self.route(q_BHQD, k_BHKD, call)
        out, _ = self.execute(plan, q_BHQD, k_BHKD, v_BHKD, self._block_mask(plan, q_BHQD, k_BHKD, call))
        b, h, num_q, _ = q_BHQD.shape
        self._book.record(call, self.name, plan.pairs_computed(b, h), b * h * num_q * k_BHKD.shape[2])
        return out.to(q_BHQD.dtype)

    def begin_iteration(self) -> None:
        return None

    def stats(self) -> AttnStats:
        return self._book.snapshot()


def build(cfg: AttentionConfig | None = None):
    """Registry factory: sliding tile behind the dense-steps / dense-layers policy."""
    from dualpar.attention.policy import wrap_with_policy

    cfg = AttentionConfig.from_mapping(cfg) if cfg is not None else AttentionConfig(backend="sliding_tile")
    return wrap_with_policy(SlidingTileAttention(cfg), cfg)
