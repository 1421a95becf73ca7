"""Which contiguous slice of DiT layers each pipeline stage owns.

A pure function over integers, shared by the engine (which loads only its slice) and the simulator (which
times it). Three ways to split, all returning contiguous ranges that cover every layer once:

- explicit: `split=[l_0, ..., l_{N-1}]` layer counts, validated (the config key is `parallel.split`);
- even (default): `L // N` layers each, the remainder going to the **last** stages, because stage 0 already
  carries the patch/time embedding, the scheduler steps and the streaming VAE decode;
- cost-aware: `costs=[c_0, ..., c_{N-1}]` is each stage's fixed extra work per item in layer-equivalents
  (stage 0: embed + scheduler + amortised decode; last stage: head + guidance). Layers are then handed out
  one at a time to the stage with the smallest total load (ties to the later stage), which minimises the
  largest per-stage load `l_j + c_j` with every stage keeping at least one layer.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def split_layers(
    num_layers: int,
    stages: int,
    split: Sequence[int] | None = None,
    costs: Sequence[float] | None = None,
) -> list[range]:
    """Contiguous layer ranges, one per stage (see the module docstring for the three modes)."""
    if stages < 1:
        raise ValueError(f"parallel.stages must be >= 1, got {stages}")
    if num_layers < stages:
        raise ValueError(
            f"parallel.stages={stages} exceeds the model's {num_layers} layers; every stage needs >= 1 layer"
        )
    if split is not None and costs is not None:
        raise ValueError("give either parallel.split (explicit layer counts) or costs, not both")
    if split is not None:
        counts = _check_explicit(num_layers, stages, split)
    elif costs is not None:
        counts = _balance(num_layers, stages, costs)
    else:
        counts = _even(num_layers, stages)
    return _ranges(counts)


def _check_explicit(num_layers: int, stages: int, split: Sequence[int]) -> list[int]:
    counts = [int(c) for c in split]
    if len(counts) != stages:
        raise ValueError(
            f"parallel.split has {len(counts)} entries but parallel.stages={stages}; "
            "give one layer count per stage"
        )
    if any(c < 1 for c in counts):
        raise ValueError(f"parallel.split={counts}: every stage needs at least 1 layer")
    if sum(counts) != num_layers:
        raise ValueError(
            f"parallel.split={counts} sums to {sum(counts)} but the model has {num_layers} layers"
        )
    return counts


def _even(num_layers: int, stages: int) -> list[int]:
    base, extra = divmod(num_layers, stages)
    return [base + (1 if j >= stages - extra else 0) for j in range(stages)]


def _balance(num_layers: int, stages: int, costs: Sequence[float]) -> list[int]:
    if len(costs) != stages:
        raise ValueError(f"costs has {len(costs)} entries but parallel.stages={stages}; give one per stage")
    if any(c < 0 for c in costs):
        raise ValueError(f"costs must be >= 0 layer-equivalents, got {list(costs)}")
    counts = [1] * stages
    # Heap of (load, -stage): the smallest load first, ties broken towards the later stage.
    heap = [(1 + float(c), -j) for j, c in enumerate(costs)]
    heapq.heapify(heap)
    for _ in range(num_layers - stages):
        load, neg_j = heapq.heappop(heap)
        counts[-neg_j] += 1
        heapq.heappush(heap, (load + 1.0, neg_j))
    return counts


def _ranges(counts: Sequence[int]) -> list[range]:
    out, start = [], 0
    for c in counts:
        out.append(range(start, start + c))
        start += c
    return out
