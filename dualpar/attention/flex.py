"""The exact branch on `torch.nn.attention.flex_attention`, from tile-level block masks.

Why: on GPU the exact branch must skip work at tile granularity. Tokens are put in group-contiguous order
(the plan's permutations), and the `BlockMask` is built with `BlockMask.from_kv_blocks` from per-tile group
membership counts (SPARSE_ATTENTION.md section 7): with Mq [Tq, A] and Mk [Tk, C], a tile pair is touched
where Mq kept Mk^T > 0 and full where it equals the tile's pair count. Only partial tiles evaluate the
`mask_mod` (kept[q group, k group]), and no Q x K token mask is ever built.

Note on CPU: eager flex_attention (no torch.compile) evaluates `mask_mod` densely and ignores the block
sparsity, so eager runs check the mask_mod; the block structure is checked separately against
`create_block_mask` and brute force. CUDA runs use `torch.compile(flex_attention)`, which honours both.

Tensor legend: B batch rows, H heads, Q queries, K keys, D head dim, A query groups, C key groups,
Tq / Tk query / key tiles of `block` tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from dualpar.attention.plan import Plan, invert_perm

Tensor = torch.Tensor


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class TileMasks:
    """Tile-level structure of a plan: which tile pairs run, and which of those need the mask_mod."""

    touched_BHTS: Tensor  # bool [B, H, Tq, Tk]: at least one kept pair
    full_BHTS: Tensor  # bool [B, H, Tq, Tk]: every valid pair kept
    q_labels_pad_BHP: Tensor  # group per sorted query position, padded to Tq*block with the pad group A
    k_labels_pad_BHP: Tensor  # group per sorted key position, padded with the pad group C
    kept_pad_BHAC: Tensor  # bool [B, H, A+1, C+1]: kept with a False pad row and column
    block: int

    def tile_density(self) -> float:
        return float(self.touched_BHTS.float().mean())


def _tile_membership(labels_sorted_BHN: Tensor, num_groups: int, block: int) -> tuple[Tensor, Tensor]:
    """Padded labels [B, H, T*block] and per-tile group counts [B, H, T, G+1] (the last column counts pads)."""
    b, h, n = labels_sorted_BHN.shape
    tiles = -(-n // block)
    pad = torch.full((b, h, tiles * block - n), num_groups, dtype=torch.long, device=labels_sorted_BHN.device)
    padded = torch.cat([labels_sorted_BHN, pad], dim=-1)
    tile_of = torch.arange(tiles * block, device=padded.device) // block
    flat = tile_of * (num_groups + 1) + padded
    counts = torch.zeros(b, h, tiles * (num_groups + 1), dtype=torch.float32, device=padded.device)
    counts.scatter_add_(-1, flat, torch.ones_like(flat, dtype=torch.float32))
    return padded, counts.view(b, h, tiles, num_groups + 1)


def tile_masks(plan: Plan, batch: int, heads: int, block: int) -> TileMasks:
    """Touched and full tile pairs of a plan in its sorted token order (exact integer counts in fp32)."""
    plan = plan.expanded(batch, heads)
    num_a, num_c = plan.num_q_groups, plan.num_k_groups
    q_sorted = plan.q_labels_BHQ.gather(-1, plan.q_perm_BHQ)
    k_sorted = plan.k_labels_BHK.gather(-1, plan.k_perm_BHK)
    q_pad, mq_BHTA = _tile_membership(q_sorted, num_a, block)
    k_pad, mk_BHSC = _tile_membership(k_sorted, num_c, block)
    kept_pad = torch.zeros(batch, heads, num_a + 1, num_c + 1, dtype=torch.bool, device=q_pad.device)
    kept_pad[:, :, :num_a, :num_c] = plan.kept_BHAC
    # Counts per tile are at most block^2, far below 2^24, so these fp32 products are exact integers.
    kept_pairs = mq_BHTA @ kept_pad.float() @ mk_BHSC.transpose(-1, -2)
    valid = mq_BHTA[..., :num_a].sum(-1)[..., :, None] * mk_BHSC[..., :num_c].sum(-1)[..., None, :]
    touched = kept_pairs > 0
    return TileMasks(touched, touched & (kept_pairs == valid), q_pad, k_pad, kept_pad, block)


def _blocks_first(sel_BHTS: Tensor) -> tuple[Tensor, Tensor]:
    """(count [B,H,Tq], indices [B,H,Tq,Tk]) with the selected key tiles first, in ascending order."""
    order = torch.sort((~sel_BHTS).to(torch.int8), dim=-1, stable=True).indices
    return sel_BHTS.sum(-1).to(torch.int32), order.to(torch.int32)


def build_block_mask(tm: TileMasks, num_q: int, num_k: int):
    """`BlockMask.from_kv_blocks` from tile data; the mask_mod looks up kept[q group, k group]."""
    from torch.nn.attention.flex_attention import BlockMask

    kept, q_lab, k_lab = tm.kept_pad_BHAC, tm.q_labels_pad_BHP, tm.k_labels_pad_BHP

    def mask_mod(b, h, q_idx, kv_idx):
        return kept[b, h, q_lab[b, h, q_idx], k_lab[b, h, kv_idx]]

    partial_num, partial_idx = _blocks_first(tm.touched_BHTS & ~tm.full_BHTS)
    full_num, full_idx = _blocks_first(tm.full_BHTS)
    return BlockMask.from_kv_blocks(partial_num, partial_idx, full_num, full_idx, BLOCK_SIZE=tm.block,
                                    mask_mod=mask_mod, seq_lengths=(num_q, num_k))


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def run_flex(q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, block_mask, scale: float,
             compiled: bool) -> tuple[Tensor, Tensor]:
    """flex_attention with a natural-log LSE, across torch versions (return_aux or return_lse)."""
    from torch.nn.attention import flex_attention as fa

    fn = _compiled_flex() if compiled else fa.flex_attention
    aux_request = getattr(fa, "AuxRequest", None)
    if aux_request is not None:
        out, aux = fn(q_BHQD, k_BHKD, v_BHKD, block_mask=block_mask, scale=scale, return_aux=aux_request(lse=True))
        return out, aux.lse
    return fn(q_BHQD, k_BHKD, v_BHKD, block_mask=block_mask, scale=scale, return_lse=True)


def exact_flex(plan: Plan, q_BHQD: Tensor, k_BHKD: Tensor, v_BHKD: Tensor, block: int = 128,
               compiled: bool | None = None, block_mask=None, info: dict | None = None) -> tuple[Tensor, Tensor]:
    """Exact branch via flex in sorted order, returned in model order: (O_ex, LSE_ex).

    `block_mask` may be passed in when the plan is static (sliding tile) so it is built once per grid.
    `compiled` defaults to True on CUDA (eager flex is a dense debugging path).
    """
    b, h, num_q, dim = q_BHQD.shape
    num_k = k_BHKD.shape[2]
    plan = plan.expanded(b, h)
    if block_mask is None:
        tm = tile_masks(plan, b, h, block)
        block_mask = build_block_mask(tm, num_q, num_k)
        if info is not None:
            info["tile_density"] = tm.tile_density()
    compiled = q_BHQD.is_cuda if compiled is None else compiled
    qp = q_BHQD.gather(2, plan.q_perm_BHQ[..., None].expand(-1, -1, -1, dim))
    kp = k_BHKD.gather(2, plan.k_perm_BHK[..., None].expand(-1, -1, -1, dim))
    vp = v_BHKD.gather(2, plan.k_perm_BHK[..., None].expand(-1, -1, -1, v_BHKD.shape[-1]))
    out_s, lse_s = run_flex(qp, kp, vp, block_mask, plan.scale, compiled)
    inv = invert_perm(plan.q_perm_BHQ)
    out = out_s.gather(2, inv[..., None].expand(-1, -1, -1, out_s.shape[-1]))
    return out, lse_s.gather(2, inv)
