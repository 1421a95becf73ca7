"""Bounded warm-start state for k-means centroids (SPARSE_ATTENTION.md section 6).

Why a separate object: the state must be keyed by plan fields only (block, layer, branch), never by batch index
or stage-local counters, so every stage and every `cfg_split` setting warm-starts identically; and it must stay
bounded over a long video. Modes:

- `per_block`: step s of (block, layer, branch) starts from the centroids of step s-1 of the same key. The entry
  of step s-1 is kept while step s runs (so repeating a call reproduces it); a block is dropped at the first
  `begin_iteration` after its last step, and at most `max_blocks` blocks are kept (least recently used go).
- `neighbour`: a call starts from the previous call on (layer, branch); cleared at every `begin_iteration`.
- `cold`: no state.

Tensor legend: H heads, A query clusters, C key clusters, D head dim.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from dualpar.attention.base import AttnCall

Tensor = torch.Tensor
Centroids = tuple[Tensor, Tensor]  # (q_HAD, k_HCD)


class CentroidCache:
    """Previous centroids per (block, layer, branch) or (layer, branch), with eviction."""

    def __init__(self, mode: str, max_blocks: int = 64) -> None:
        if mode not in ("per_block", "neighbour", "cold"):
            raise ValueError(f"attention.centroid_init={mode!r} is invalid: choose per_block, neighbour or cold")
        self.mode = mode
        self.max_blocks = max_blocks
        # per_block: block -> {(layer, branch): {step: centroids}}; OrderedDict gives the LRU order.
        self._blocks: OrderedDict[int, dict[tuple[int, str], dict[int, Centroids]]] = OrderedDict()
        self._finished: set[int] = set()
        self._neighbour: dict[tuple[int, str], Centroids] = {}

    def lookup(self, call: AttnCall, branch: str) -> Centroids | None:
        """Centroids to warm-start this call's row `branch` from, or None for a cold start."""
        if self.mode == "neighbour":
            return self._neighbour.get((call.layer, branch))
        if self.mode == "per_block" and call.block in self._blocks:
            return self._blocks[call.block].get((call.layer, branch), {}).get(call.step - 1)
        return None

    def store(self, call: AttnCall, branch: str, cents: Centroids) -> None:
        """Remember this call's final centroids (detached)."""
        cents = (cents[0].detach(), cents[1].detach())
        if self.mode == "neighbour":
            self._neighbour[(call.layer, branch)] = cents
        elif self.mode == "per_block":
            per_key = self._blocks.setdefault(call.block, {}).setdefault((call.layer, branch), {})
            per_key[call.step] = cents
            for old in [s for s in per_key if s < call.step - 1]:
                del per_key[old]
            self._blocks.move_to_end(call.block)
            if call.step >= call.num_steps - 1:
                self._finished.add(call.block)
            while len(self._blocks) > self.max_blocks:
                dropped, _ = self._blocks.popitem(last=False)
                self._finished.discard(dropped)

    def begin_iteration(self) -> None:
        """Iteration boundary: drop finished blocks (per_block) or everything (neighbour)."""
        self._neighbour.clear()
        for block in self._finished:
            self._blocks.pop(block, None)
        self._finished.clear()

    def num_entries(self) -> int:
        """Stored centroid pairs (for tests and memory accounting)."""
        per_block = sum(len(steps) for keys in self._blocks.values() for steps in keys.values())
        return per_block + len(self._neighbour)

    def blocks(self) -> tuple[int, ...]:
        return tuple(self._blocks)

    def state_dict(self) -> dict:
        """Checkpointable state (CPU tensors); per_block state must be saved on every stage to resume exactly."""
        cpu = {b: {k: {s: (c[0].cpu(), c[1].cpu()) for s, c in steps.items()} for k, steps in keys.items()}
               for b, keys in self._blocks.items()}
        nb = {k: (c[0].cpu(), c[1].cpu()) for k, c in self._neighbour.items()}
        return {"mode": self.mode, "blocks": cpu, "finished": sorted(self._finished), "neighbour": nb}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"centroid state was saved with centroid_init={state.get('mode')!r}, not {self.mode!r}")
        self._blocks = OrderedDict(
            (b, {k: {s: (c[0].to(device), c[1].to(device)) for s, c in steps.items()} for k, steps in keys.items()})
            for b, keys in state["blocks"].items())
        self._finished = set(state["finished"])
        self._neighbour = {k: (c[0].to(device), c[1].to(device)) for k, c in state["neighbour"].items()}
