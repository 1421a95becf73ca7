"""Block selection for the clustered backend: the SVG-EAR probe and greedy budget, and SVG2's top-p.

Pure functions over cluster statistics, so routing can be tested and replayed without running attention.
The probe and all routing arithmetic run in fp32 (fp64 for fp64 inputs) with the row maximum subtracted.

Tensor legend: R rows (batch x heads), A query clusters, C key clusters, K keys, D head dim, M = A*C blocks.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor
NEG_INF = float("-inf")


def probe_error(qbar_RAD: Tensor, k_RKD: Tensor, kbar_RCD: Tensor, k_labels_RK: Tensor, scale: float,
                normalise: bool, power: int, chunk_elems: int) -> Tensor:
    """Per block (a, c): sum over keys j of c of |exp(l_aj - m_a) - exp(lbar_ac - m_a)|^power.

    l_aj = scale q̄_a.k_j (true logit), lbar_ac = scale q̄_a.k̄_c (centroid logit), m_a the row max of l_a.
    With `normalise`, gaps are divided by Z_a = sum_j exp(l_aj - m_a) first ([R]).
    """
    rows, num_a, _ = qbar_RAD.shape
    num_c = kbar_RCD.shape[1]
    step = max(1, chunk_elems // max(1, num_a * k_RKD.shape[1]))
    out = []
    for r0 in range(0, rows, step):
        sl = slice(r0, r0 + step)
        logit_RAK = scale * torch.bmm(qbar_RAD[sl], k_RKD[sl].transpose(1, 2))
        row_max_RA1 = logit_RAK.amax(dim=-1, keepdim=True)
        true_RAK = torch.exp(logit_RAK - row_max_RA1)
        cent_RAC = torch.exp(scale * torch.bmm(qbar_RAD[sl], kbar_RCD[sl].transpose(1, 2)) - row_max_RA1)
        lab_RAK = k_labels_RK[sl][:, None, :].expand(-1, num_a, -1)
        gap_RAK = (true_RAK - cent_RAC.gather(2, lab_RAK)).abs()
        if normalise:
            gap_RAK = gap_RAK / true_RAK.sum(dim=-1, keepdim=True)
        if power == 2:
            gap_RAK = gap_RAK * gap_RAK
        err = torch.zeros(gap_RAK.shape[0], num_a, num_c, dtype=gap_RAK.dtype, device=gap_RAK.device)
        out.append(err.scatter_add_(2, lab_RAK, gap_RAK))
    return torch.cat(out)


def centroid_mass(qbar_RAD: Tensor, kbar_RCD: Tensor, k_sizes_RC: Tensor, scale: float) -> Tensor:
    """SVG2's block score: softmax over c of scale q̄_a.k̄_c + log|c| (empty clusters get 0)."""
    logit_RAC = scale * torch.bmm(qbar_RAD, kbar_RCD.transpose(1, 2))
    logit_RAC = logit_RAC + torch.log(k_sizes_RC.to(logit_RAC.dtype))[:, None, :]
    return torch.softmax(logit_RAC, dim=-1).nan_to_num(0.0)


def greedy_prefix(ratio_RM: Tensor, cost_RM: Tensor, valid_RM: Tensor, budget_R: Tensor) -> Tensor:
    """Keep blocks in descending ratio while the running cost stays within budget.

    The kept set is a prefix of one fixed (stable) order, so a larger budget keeps a superset (nested routing).
    Invalid (empty) blocks sort last and are never kept.
    """
    ratio = torch.where(valid_RM, ratio_RM, torch.full_like(ratio_RM, NEG_INF))
    order_RM = torch.sort(ratio, dim=-1, descending=True, stable=True).indices
    cum_RM = torch.cumsum(cost_RM.gather(-1, order_RM), dim=-1)
    take_RM = (cum_RM <= budget_R[..., None]) & valid_RM.gather(-1, order_RM)
    return torch.zeros_like(valid_RM).scatter_(-1, order_RM, take_RM)


def budget_route(ratio_RAC: Tensor, q_sizes_RA: Tensor, k_sizes_RC: Tensor, density: float,
                 num_keys: int, reserved_pairs: int, scope: str) -> Tensor:
    """Greedy selection under a pair budget of density * Q * K (scope `head`) or per query cluster (`row`).

    `reserved_pairs` (pairs of keys always kept exactly) are charged to the budget first.
    """
    rows, num_a, num_c = ratio_RAC.shape
    cost_RAC = q_sizes_RA[:, :, None] * k_sizes_RC[:, None, :]
    valid_RAC = cost_RAC > 0
    num_q = int(q_sizes_RA[0].sum())
    if scope == "head":
        budget = max(0, math.floor(density * num_q * num_keys + 1e-6) - reserved_pairs)
        budget_R = torch.full((rows,), budget, dtype=torch.long, device=ratio_RAC.device)
        kept = greedy_prefix(ratio_RAC.reshape(rows, -1), cost_RAC.reshape(rows, -1),
                             valid_RAC.reshape(rows, -1), budget_R)
        return kept.reshape(rows, num_a, num_c)
    # row scope: query cluster a may spend density * K keys (minus the reserved keys) on key clusters.
    reserved_keys = reserved_pairs // max(1, num_q)
    budget = max(0, math.floor(density * num_keys + 1e-6) - reserved_keys)
    budget_RA = torch.full((rows, num_a), budget, dtype=torch.long, device=ratio_RAC.device)
    k_cost_RAC = k_sizes_RC[:, None, :].expand(-1, num_a, -1)
    return greedy_prefix(ratio_RAC, k_cost_RAC, valid_RAC, budget_RA)


def top_p_route(mass_RAC: Tensor, k_sizes_RC: Tensor, top_p: float, min_kc_ratio: float) -> Tensor:
    """SVG2: each query cluster keeps key clusters by descending mass until the cumulative mass reaches
    top_p, and at least max(1, ceil(min_kc_ratio * C)) of them; empty key clusters are never kept."""
    num_c = mass_RAC.shape[-1]
    valid_RAC = (k_sizes_RC > 0)[:, None, :].expand_as(mass_RAC)
    mass = torch.where(valid_RAC, mass_RAC, torch.full_like(mass_RAC, -1.0))
    order_RAC = torch.sort(mass, dim=-1, descending=True, stable=True).indices
    sorted_mass = mass_RAC.gather(-1, order_RAC) * valid_RAC.gather(-1, order_RAC)
    before_RAC = torch.cumsum(sorted_mass, dim=-1) - sorted_mass
    min_keep = max(1, math.ceil(min_kc_ratio * num_c - 1e-9))
    rank = torch.arange(num_c, device=mass_RAC.device)
    take = ((before_RAC < top_p) | (rank < min_keep)) & valid_RAC.gather(-1, order_RAC)
    return torch.zeros_like(valid_RAC).scatter_(-1, order_RAC, take)


def error_ratio(err_RAC: Tensor, q_sizes_RA: Tensor, k_sizes_RC: Tensor, ratio: str) -> Tensor:
    """Error-to-cost ratio: per_key ê/|c| or per_pair ê/(|a||c|) ([R])."""
    denom = k_sizes_RC[:, None, :].to(err_RAC.dtype).clamp(min=1)
    if ratio == "per_pair":
        denom = denom * q_sizes_RA[:, :, None].to(err_RAC.dtype).clamp(min=1)
    return err_RAC / denom
