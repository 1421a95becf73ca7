"""The routing decision of a sparse call as plain tensors, apart from its execution.

A `Plan` says which group every token belongs to (a k-means cluster or a 3D tile), which (query group, key
group) blocks are computed exactly, and which skipped blocks are compensated through key centroids. Every
executor (`reference`, `flex`) consumes the same plan, so tests can feed one routing to all of them
(SPARSE_ATTENTION.md section 1).

Tensor legend: B batch rows, H heads, Q query tokens, K key tokens, D head dim, A query groups, C key groups.
Plan tensors may have size-1 B and H dimensions (static masks shared by all rows); they broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


def group_sizes(labels_BHN: Tensor, num_groups: int) -> Tensor:
    """Token count of every group: [B, H, G] (int64)."""
    sizes = torch.zeros(*labels_BHN.shape[:-1], num_groups, dtype=torch.long, device=labels_BHN.device)
    return sizes.scatter_add_(-1, labels_BHN, torch.ones_like(labels_BHN))


def stable_perm(labels_BHN: Tensor) -> Tensor:
    """Stable sort of tokens by group: entry i is the model index of the token at sorted position i."""
    return torch.sort(labels_BHN, dim=-1, stable=True).indices


def invert_perm(perm_BHN: Tensor) -> Tensor:
    """Inverse permutation: model index -> sorted position."""
    inv = torch.empty_like(perm_BHN)
    pos = torch.arange(perm_BHN.shape[-1], device=perm_BHN.device).expand_as(perm_BHN)
    return inv.scatter_(-1, perm_BHN, pos)


@dataclass(frozen=True)
class Plan:
    """Group labels, permutations and kept blocks of one attention call."""

    q_labels_BHQ: Tensor  # int64 group of each query token, model order
    k_labels_BHK: Tensor  # int64 group of each key token, model order
    kept_BHAC: Tensor  # bool: block (a, c) is computed exactly
    q_sizes_BHA: Tensor  # int64 tokens per query group
    k_sizes_BHC: Tensor  # int64 tokens per key group
    q_perm_BHQ: Tensor  # stable sort by group (group-contiguous order)
    k_perm_BHK: Tensor
    scale: float  # softmax scale applied to q.k
    compensate_BHAC: Tensor | None = None  # bool: skipped, non-empty blocks added back through centroids
    k_centroids_BHCD: Tensor | None = None  # fp32 mean key of each key group (for compensation)
    overhead: dict[str, int] = field(default_factory=dict)  # routing FLOPs by kind

    @property
    def num_q_groups(self) -> int:
        return self.kept_BHAC.shape[-2]

    @property
    def num_k_groups(self) -> int:
        return self.kept_BHAC.shape[-1]

    def block_pairs_BHAC(self) -> Tensor:
        """Token pairs of every block, |a| * |c| (int64)."""
        return self.q_sizes_BHA[..., :, None] * self.k_sizes_BHC[..., None, :]

    def pairs_computed(self, batch: int, heads: int) -> int:
        """Exactly computed (query, key) pairs over all rows and heads of a [batch, heads] call."""
        kept = (self.block_pairs_BHAC() * self.kept_BHAC).sum()
        rows = self.kept_BHAC.shape[0] * self.kept_BHAC.shape[1]
        return int(kept) * (batch * heads // rows)

    def expanded(self, batch: int, heads: int) -> Plan:
        """The same plan with explicit [batch, heads] leading dimensions (views, no copies)."""

        def ex(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.expand(batch, heads, *t.shape[2:])

        return Plan(
            q_labels_BHQ=ex(self.q_labels_BHQ), k_labels_BHK=ex(self.k_labels_BHK), kept_BHAC=ex(self.kept_BHAC),
            q_sizes_BHA=ex(self.q_sizes_BHA), k_sizes_BHC=ex(self.k_sizes_BHC), q_perm_BHQ=ex(self.q_perm_BHQ),
            k_perm_BHK=ex(self.k_perm_BHK), scale=self.scale, compensate_BHAC=ex(self.compensate_BHAC),
            k_centroids_BHCD=ex(self.k_centroids_BHCD), overhead=dict(self.overhead),
        )


def make_plan(
    q_labels_BHQ: Tensor,
    k_labels_BHK: Tensor,
    kept_BHAC: Tensor,
    scale: float,
    compensate_BHAC: Tensor | None = None,
    k_centroids_BHCD: Tensor | None = None,
    overhead: dict[str, int] | None = None,
) -> Plan:
    """Derive sizes and permutations from labels; the one constructor every router uses."""
    num_a, num_c = kept_BHAC.shape[-2:]
    return Plan(
        q_labels_BHQ=q_labels_BHQ, k_labels_BHK=k_labels_BHK, kept_BHAC=kept_BHAC.bool(),
        q_sizes_BHA=group_sizes(q_labels_BHQ, num_a), k_sizes_BHC=group_sizes(k_labels_BHK, num_c),
        q_perm_BHQ=stable_perm(q_labels_BHQ), k_perm_BHK=stable_perm(k_labels_BHK), scale=float(scale),
        compensate_BHAC=compensate_BHAC, k_centroids_BHCD=k_centroids_BHCD, overhead=dict(overhead or {}),
    )


def token_mask(plan: Plan, q_rows: slice | None = None) -> Tensor:
    """Token-level mask [B, H, Q', K] of exactly computed pairs (materialised; reference and tests only)."""
    q_lab = plan.q_labels_BHQ if q_rows is None else plan.q_labels_BHQ[..., q_rows]
    b, h = torch.broadcast_shapes(q_lab.shape[:2], plan.kept_BHAC.shape[:2], plan.k_labels_BHK.shape[:2])
    kept = plan.kept_BHAC.expand(b, h, -1, -1)
    rows_BHQC = kept.gather(2, q_lab.expand(b, h, -1)[..., None].expand(-1, -1, -1, kept.shape[-1]))
    k_lab = plan.k_labels_BHK.expand(b, h, -1)
    return rows_BHQC.gather(3, k_lab[:, :, None, :].expand(-1, -1, rows_BHQC.shape[2], -1))
