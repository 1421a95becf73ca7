"""Executing a `Plan`: the exact PyTorch reference, centroid compensation and the log-sum-exp merge.

The reference materialises scores chunk by chunk in fp32 (fp64 for fp64 input) and masks them with the plan's
token mask, so it defines correctness for every other implementation. Compensation and merge are shared by all
executors: skipped blocks come back through key centroids with logit scale q_i.k̄_c + log|c| (as if |c| copies
of (k̄_c, v̄_c)), and the two partial softmaxes are merged as one softmax over their union.

Tensor legend: B batch rows, H heads, Q queries, K keys, D head dim, A query groups, C key groups, n a chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dualpar.attention.plan import Plan, token_mask

Tensor = torch.Tensor
ExactFn = Callable[[Plan, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _masked_softmax_out(logit_BHnK: Tensor, v_BHKD: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax-weighted values and natural-log LSE; rows with every logit -inf give 0 and -inf (no NaN)."""
    lse_BHn = torch.logsumexp(logit_BHnK, dim=-1)
    safe = torch.where(torch.isfinite(lse_BHn), lse_BHn, torch.zeros_like(lse_BHn))
    prob = torch.exp(logit_BHnK - safe[..., None])
    return torch.matmul(prob, v_BHKD), lse_BHn


def _row_chunk(rows: int, cols: int, chunk_elems: int) -> int:
    return max(1, chunk_elems // max(1, rows * cols))


def exact_reference(plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor,
                    chunk_elems: int = 1 << 26) -> tuple[Tensor, Tensor]:
    """Attention over the plan's kept pairs, in model order: (O_ex [B,H,Q,D], LSE_ex [B,H,Q])."""
    dt = compute_dtype(q_BHQD)
    b, h, num_q, _ = q_BHQD.shape
    q, k, v = q_BHQD.to(dt), k_BHKD.to(dt), v_BHKD.to(dt)
    plan = plan.expanded(b, h)
    step = _row_chunk(b * h, k.shape[2], chunk_elems)
    outs, lses = [], []
    for i0 in range(0, num_q, step):
        rows = slice(i0, i0 + step)
        logit = plan.scale * torch.matmul(q[:, :, rows], k.transpose(-1, -2))
        logit = logit.masked_fill(~token_mask(plan, rows), float("-inf"))
        out, lse = _masked_softmax_out(logit, v)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def group_means(x_BHND: Tensor, labels_BHN: Tensor, sizes_BHG: Tensor) -> Tensor:
    """Mean of x over each group: [B, H, G, D]; empty groups give 0."""
    b, h, _, d = x_BHND.shape
    sums = torch.zeros(b, h, sizes_BHG.shape[-1], d, dtype=x_BHND.dtype, device=x_BHND.device)
    sums.scatter_add_(2, labels_BHN[..., None].expand(b, h, -1, d), x_BHND)
    return sums / sizes_BHG.clamp(min=1)[..., None].to(x_BHND.dtype)


def compensation(plan: Plan, q_BHQD: Tensor, v_BHKD: Tensor,
                 chunk_elems: int = 1 << 26) -> tuple[Tensor, Tensor]:
    """Per query token, attention to the centroids of its skipped key clusters: (O_c, LSE_c)."""
    dt = compute_dtype(q_BHQD)
    b, h, num_q, _ = q_BHQD.shape
    plan = plan.expanded(b, h)
    q = q_BHQD.to(dt)
    vbar_BHCD = group_means(v_BHKD.to(dt), plan.k_labels_BHK, plan.k_sizes_BHC)
    kbar_BHCD = plan.k_centroids_BHCD.to(dt)
    log_size = torch.log(plan.k_sizes_BHC.to(dt))[:, :, None, :]
    bias_BHAC = torch.where(plan.compensate_BHAC, log_size, torch.full_like(log_size, float("-inf")))
    num_c = bias_BHAC.shape[-1]
    step = _row_chunk(b * h, num_c, chunk_elems)
    outs, lses = [], []
    for i0 in range(0, num_q, step):
        rows = slice(i0, i0 + step)
        lab = plan.q_labels_BHQ[:, :, rows, None].expand(-1, -1, -1, num_c)
        logit = plan.scale * torch.matmul(q[:, :, rows], kbar_BHCD.transpose(-1, -2)) + bias_BHAC.gather(2, lab)
        out, lse = _masked_softmax_out(logit, vbar_BHCD)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def merge(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> tuple[Tensor, Tensor]:
    """One softmax over the union of two disjoint key sets; all -inf rows give 0 output and -inf LSE."""
    lse = torch.logaddexp(lse_a, lse_b)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    w_a = torch.where(torch.isfinite(lse_a), torch.exp(lse_a - safe), torch.zeros_like(lse_a))
    w_b = torch.where(torch.isfinite(lse_b), torch.exp(lse_b - safe), torch.zeros_like(lse_b))
    return w_a[..., None] * out_a + w_b[..., None] * out_b, lse


def execute(plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, exact: ExactFn | None = None,
            chunk_elems: int = 1 << 26) -> tuple[Tensor, Tensor]:
    """Exact branch (reference unless `exact` is given), plus compensation when the plan asks for it.

    Returns the output in model order and in the compute dtype, with its natural-log LSE.
    """
    if exact is None:
        out, lse = exact_reference(plan, q_BHQD, k_BHKD, v_BHKD, chunk_elems)
    else:
        out, lse = exact(plan, q_BHQD, k_BHKD, v_BHKD)
    dt = compute_dtype(q_BHQD)
    out, lse = out.to(dt), lse.to(dt)
    if plan.compensate_BHAC is not None and plan.k_centroids_BHCD is not None:
        out_c, lse_c = compensation(plan, q_BHQD, v_BHKD, chunk_elems)
        out, lse = merge(out, lse, out_c, lse_c)
    return out, lse


def compensation_flops(plan: Plan, batch: int, heads: int, num_q: int, dim: int) -> int:
    """Spec section 10: about 4 Q Ck D per (row, head)."""
    if plan.compensate_BHAC is None:
        return 0
    return 4 * batch * heads * num_q * plan.num_k_groups * dim


def resolve_impl(impl: str, device: torch.device) -> str:
    """`auto` means flex on CUDA when this torch has it, else the reference."""
    if impl != "auto":
        return impl
    from dualpar.attention.flex import flex_available

    return "flex" if device.type == "cuda" and flex_available() else "reference"


def run_plan(plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, impl: str, flex_block: int,
             chunk_elems: int, block_mask=None, info: dict | None = None) -> tuple[Tensor, Tensor]:
    """Execute a plan with the configured implementation (`reference`, `flex` or `auto`)."""
    if resolve_impl(impl, q_BHQD.device) == "reference":
        return execute(plan, q_BHQD, k_BHKD, v_BHKD, None, chunk_elems)
    from dualpar.attention.flex import exact_flex

    def exact(p: Plan, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return exact_flex(p, q, k, v, block=flex_block, block_mask=block_mask, info=info)

    return execute(plan, q_BHQD, k_BHKD, v_BHKD, exact, chunk_elems)
