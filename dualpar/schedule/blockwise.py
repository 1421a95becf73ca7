"""The block-queue plan: which (block, step) every iteration processes, in which order.

This is the one plan that the serial engine, every pipeline stage and the simulator follow
(docs/algorithm.md, "The block queue"). It is a pure function over integers returning plain data, so it can be
unit-tested without processes and replayed by the performance model.

Legend: P = block_latents, C = context_latents, T = steps, n = number of blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class BlockGeometry:
    """How a video of `n_blocks` blocks maps onto latent frames.

    Block 0 owns latents [0, P+C); block k >= 1 owns [kP+C, (k+1)P+C). A window for block k >= 1 is
    [last C latents of block k-1 | P own latents] = latents [kP, (k+1)P+C): always P+C frames.
    """

    block_latents: int
    context_latents: int
    n_blocks: int

    def __post_init__(self) -> None:
        if self.block_latents < 1:
            raise ValueError(f"block_latents must be >= 1, got {self.block_latents}")
        if not 0 <= self.context_latents <= self.block_latents:
            raise ValueError(
                f"context_latents must be in [0, block_latents={self.block_latents}], got {self.context_latents}"
            )
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {self.n_blocks}")

    @property
    def window_latents(self) -> int:
        return self.block_latents + self.context_latents

    @property
    def total_latents(self) -> int:
        return self.n_blocks * self.block_latents + self.context_latents

    def own_range(self, block: int) -> range:
        """Latent frame indices that `block` owns (and that it writes to the output)."""
        p, c = self.block_latents, self.context_latents
        if block == 0:
            return range(0, p + c)
        return range(block * p + c, (block + 1) * p + c)

    def window_range(self, block: int) -> range:
        """Latent frame indices of `block`'s window: its left context followed by its own frames."""
        p, c = self.block_latents, self.context_latents
        if block == 0:
            return range(0, p + c)
        return range(block * p, (block + 1) * p + c)

    def own_offset(self, block: int) -> int:
        """Where the block's own frames start inside its window (0 for block 0, C otherwise)."""
        return 0 if block == 0 else self.context_latents


def blocks_for_latents(latents_needed: int, block_latents: int, context_latents: int) -> int:
    """Smallest n with n*P + C >= latents_needed (at least one block)."""
    return max(1, math.ceil((latents_needed - context_latents) / block_latents))


@dataclass(frozen=True)
class WorkItem:
    """One block pass: block `block` at its own denoising step `step`, in iteration `iteration`.

    `order` is the item's position in the single global message order (iteration-major, tail to head),
    which every stage follows, so sends and receives match without headers.
    `has_right` tells whether the stage's feature cache holds the right neighbour's K/V for this pass.
    """

    order: int
    iteration: int
    block: int
    step: int
    has_right: bool

    @property
    def has_left(self) -> bool:
        return self.block > 0


@dataclass(frozen=True)
class Iteration:
    """One iteration: the block that leaves at its start (if any), the block that joins, then the passes."""

    index: int
    finished: int | None
    joined: int | None
    items: tuple[WorkItem, ...]


@dataclass(frozen=True)
class BlockPlan:
    """The full plan of a job: n blocks, T steps, T+n iterations."""

    n_blocks: int
    steps: int
    iterations: tuple[Iteration, ...]

    @cached_property
    def items(self) -> tuple[WorkItem, ...]:
        return tuple(item for it in self.iterations for item in it.items)

    @property
    def max_in_flight(self) -> int:
        return min(self.n_blocks, self.steps)

    def item_index(self, block: int, step: int) -> int:
        """Global order of the pass (block, step); valid for 0 <= step < T."""
        return self._order[(block, step)]

    @cached_property
    def _order(self) -> dict[tuple[int, int], int]:
        return {(it.block, it.step): it.order for it in self.items}

    def dependencies(self, item: WorkItem, left_context: str) -> tuple[int, ...]:
        """Orders of the passes whose result stage 0 needs before it can assemble `item`'s window.

        Own latents need the block's previous step. Left context `ahead` needs block k-1 after its update
        at the same step index (one iteration earlier); `same` needs block k-1 at block k's noise level,
        i.e. after step s-1 (its fresh noise when s == 0).
        """
        deps = []
        k, s = item.block, item.step
        if s > 0:
            deps.append(self.item_index(k, s - 1))
        if k > 0:
            if left_context == "ahead":
                deps.append(self.item_index(k - 1, s))
            elif s > 0:
                deps.append(self.item_index(k - 1, s - 1))
        return tuple(deps)


def blockwise_plan(n_blocks: int, steps: int) -> BlockPlan:
    """Build the block-queue plan (docs/algorithm.md).

    Iterations run i = 0 .. T+n-1. At the start of iteration i the head block leaves if it has had T
    updates, then block i joins (while blocks remain). Every active block is processed once, tail
    (noisiest) first, head (cleanest) last: block k at iterations k .. k+T-1 with step i-k.
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    iterations = []
    order = 0
    for i in range(steps + n_blocks):
        finished = i - steps if i - steps >= 0 else None
        joined = i if i < n_blocks else None
        tail = min(i, n_blocks - 1)
        head = max(0, i - steps + 1)
        items = []
        for k in range(tail, head - 1, -1):
            items.append(WorkItem(order=order, iteration=i, block=k, step=i - k, has_right=k < tail))
            order += 1
        iterations.append(Iteration(index=i, finished=finished, joined=joined, items=tuple(items)))
    return BlockPlan(n_blocks=n_blocks, steps=steps, iterations=tuple(iterations))


def idle_fraction_estimate(stages: int, steps: int, n_blocks: int) -> float:
    """docs/algorithm.md's bubble estimate (N^2-N-1)/(N^2-N-1+T*n); only meaningful when min(n, T) >= N."""
    bubble = stages * stages - stages - 1
    if bubble <= 0:
        return 0.0
    return bubble / (bubble + steps * n_blocks)
