"""Batched Euclidean k-means for clustering queries and keys (SVG2's semantic permutation).

Everything here is deterministic: initial centroids come from a generator seeded by the call's place in the
block plan (seed, block, layer, branch) and never from global RNG, so every pipeline stage that owns a layer
clusters identically. Empty clusters keep their previous centroid (SVG2) and report size 0.

Tensor legend: R independent rows (heads of one batch row), N points, C clusters, D features.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class KMeansResult:
    """Final assignment and centroids; centroids of non-empty clusters are exact member means."""

    labels_RN: Tensor  # int64
    centroids_RCD: Tensor  # fp32 (or fp64 for fp64 input)
    sizes_RC: Tensor  # int64


def stable_seed(*parts: object) -> int:
    """A process-independent 63-bit seed from plan fields (Python's hash() is salted per process)."""
    text = ":".join(str(p) for p in parts).encode()
    return (zlib.crc32(text) << 31) ^ zlib.crc32(text[::-1])


def seeded_init(x_RND: Tensor, num_clusters: int, seed: int) -> Tensor:
    """Distinct points per row picked by a generator seeded with `seed` (CPU generator, any device)."""
    rows, n, _ = x_RND.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx_RC = torch.stack([torch.randperm(n, generator=gen)[:num_clusters] for _ in range(rows)])
    idx_RC = idx_RC.sort(dim=-1).values.to(x_RND.device)
    return x_RND.gather(1, idx_RC[..., None].expand(-1, -1, x_RND.shape[-1])).clone()


def assign(x_RND: Tensor, c_RCD: Tensor) -> Tensor:
    """Nearest centroid per point (ties go to the lower index)."""
    # ||x||^2 is constant per point, so argmin over ||c||^2 - 2 x.c is the Euclidean argmin.
    dist_RNC = (c_RCD * c_RCD).sum(-1)[:, None, :] - 2.0 * torch.bmm(x_RND, c_RCD.transpose(1, 2))
    return dist_RNC.argmin(dim=-1)


def update(x_RND: Tensor, labels_RN: Tensor, c_RCD: Tensor) -> tuple[Tensor, Tensor]:
    """Member means; an empty cluster keeps its previous centroid."""
    rows, _, dim = x_RND.shape
    num_c = c_RCD.shape[1]
    sums_RCD = torch.zeros(rows, num_c, dim, dtype=x_RND.dtype, device=x_RND.device)
    sums_RCD.scatter_add_(1, labels_RN[..., None].expand(-1, -1, dim), x_RND)
    sizes_RC = torch.zeros(rows, num_c, dtype=torch.long, device=x_RND.device)
    sizes_RC.scatter_add_(1, labels_RN, torch.ones_like(labels_RN))
    means_RCD = sums_RCD / sizes_RC.clamp(min=1)[..., None].to(x_RND.dtype)
    return torch.where(sizes_RC[..., None] > 0, means_RCD, c_RCD), sizes_RC


def kmeans(x_RND: Tensor, init_RCD: Tensor, iters: int, chunk_elems: int = 1 << 26) -> KMeansResult:
    """`iters` Lloyd steps from `init_RCD`, then a final assignment and exact member means.

    Rows are processed in chunks so the [rows, N, C] distance matrix stays under `chunk_elems`.
    """
    compute = torch.float64 if x_RND.dtype == torch.float64 else torch.float32
    x_RND = x_RND.to(compute)
    c_RCD = init_RCD.to(compute)
    rows, n, _ = x_RND.shape
    step = max(1, chunk_elems // max(1, n * c_RCD.shape[1]))
    labels, cents, sizes = [], [], []
    for r0 in range(0, rows, step):
        x, c = x_RND[r0:r0 + step], c_RCD[r0:r0 + step]
        for _ in range(iters):
            c, _ = update(x, assign(x, c), c)
        lab = assign(x, c)
        c, size = update(x, lab, c)
        labels.append(lab)
        cents.append(c)
        sizes.append(size)
    return KMeansResult(torch.cat(labels), torch.cat(cents), torch.cat(sizes))


def kmeans_flops(points: int, clusters: int, dim: int, iters: int) -> int:
    """Distance FLOPs of `iters` Lloyd steps plus the final assignment (spec section 10)."""
    return (iters + 1) * 2 * points * clusters * dim
