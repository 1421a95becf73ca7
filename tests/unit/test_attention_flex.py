"""flex_attention path against the reference on the same plan, and its tile-level block structure.

Eager flex_attention runs on CPU in this torch (it evaluates mask_mod densely and ignores block sparsity), so
outputs are compared eagerly and the BlockMask structure is checked apart: against create_block_mask and against
brute-force tile counts. Compiled CPU flex (which honours the block structure) takes ~30 s to compile and
cannot return the LSE, so it is opt-in with DUALPAR_FLEX_COMPILE=1.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dualpar.attention.clustered import ClusteredAttention
from dualpar.attention.config import AttentionConfig
from dualpar.attention.execute import exact_reference, execute
from dualpar.attention.flex import build_block_mask, exact_flex, tile_masks
from dualpar.attention.plan import invert_perm, make_plan, token_mask
from dualpar.attention.sliding_tile import SlidingTileAttention, sliding_tile_plan
from dualpar.attention.synthetic import clustered_qkv, make_call

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")

Q_GRID, KV_GRID = (2, 8, 8), (3, 8, 8)
BLOCK = 32


def _flex_runs_on_cpu() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention

        x = torch.randn(1, 1, 16, 8)
        flex_attention(x, x, x)
        return True
    except Exception:  # noqa: BLE001 - any failure means this build cannot run it here
        return False


needs_flex = pytest.mark.skipif(not _flex_runs_on_cpu(), reason="flex_attention needs CUDA in this torch build")


def clustered_plan(**kw):
    q, k, v = clustered_qkv(2, 2, 128, 192, 16)
    cfg = AttentionConfig(backend="clustered", centroid_init="cold", impl="reference", **kw)
    return ClusteredAttention(cfg).route(q, k, make_call(q_grid=Q_GRID, kv_grid=KV_GRID)), q, k, v


@needs_flex
@pytest.mark.parametrize("compensation", [True, False])
def test_flex_equals_reference_on_clustered_plan(compensation):
    plan, q, k, v = clustered_plan(density=0.25, compensation=compensation)
    out_r, lse_r = execute(plan, q, k, v)
    out_f, lse_f = execute(plan, q, k, v, lambda p, a, b, c: exact_flex(p, a, b, c, block=BLOCK))
    assert (out_r - out_f).abs().max() < 1e-5 and (lse_r - lse_f).abs().max() < 1e-5


@needs_flex
def test_flex_backend_equals_reference_backend_and_sliding_tile():
    q, k, v = clustered_qkv(2, 2, 128, 192, 16)
    call = make_call(q_grid=Q_GRID, kv_grid=KV_GRID)
    outs = {}
    for impl in ("reference", "flex"):
        cfg = AttentionConfig(backend="sliding_tile", impl=impl, flex_block_size=BLOCK, tile_size=(1, 4, 8),
                              window=(1, 1, 1), centroid_init="cold")
        outs[impl] = (ClusteredAttention(cfg)(q, k, v, call), SlidingTileAttention(cfg)(q, k, v, call))
    for a, b in zip(outs["reference"], outs["flex"]):
        assert (a - b).abs().max() < 1e-5


@needs_flex
def test_flex_rows_with_nothing_kept_give_zero_and_neg_inf():
    plan, q, k, v = clustered_plan(density=0.0, compensation=False)
    out, lse = exact_flex(plan, q, k, v, block=BLOCK)
    assert torch.isfinite(out).all() and out.abs().max() == 0 and torch.isneginf(lse).all()


def _brute_tiles(plan, batch, heads, block):
    """Touched / full tile pairs from the token mask in sorted order."""
    mask = token_mask(plan.expanded(batch, heads))
    qp, kp = plan.expanded(batch, heads).q_perm_BHQ, plan.expanded(batch, heads).k_perm_BHK
    mask = mask.gather(2, qp[..., None].expand(-1, -1, -1, mask.shape[-1])).gather(
        3, kp[:, :, None, :].expand(-1, -1, mask.shape[2], -1))
    nq, nk = -(-mask.shape[2] // block), -(-mask.shape[3] // block)
    padded = torch.zeros(batch, heads, nq * block, nk * block, dtype=torch.int64)
    valid = torch.zeros_like(padded)
    padded[:, :, : mask.shape[2], : mask.shape[3]] = mask.long()
    valid[:, :, : mask.shape[2], : mask.shape[3]] = 1
    kept = padded.view(batch, heads, nq, block, nk, block).sum((3, 5))
    total = valid.view(batch, heads, nq, block, nk, block).sum((3, 5))
    return kept > 0, (kept == total) & (kept > 0)


@pytest.mark.parametrize("block", [16, 48])
def test_tile_masks_match_brute_force(block):
    plan, *_ = clustered_plan(density=0.3)
    tm = tile_masks(plan, 2, 2, block)
    touched, full = _brute_tiles(plan, 2, 2, block)
    assert torch.equal(tm.touched_BHTS, touched) and torch.equal(tm.full_BHTS, full)
    st = sliding_tile_plan((2, 8, 8), (3, 8, 8), (1, 4, 4), (1, 3, 1), 1.0)
    tm = tile_masks(st, 2, 2, 16)  # 16-token tiles: every tile pair is full or empty
    assert torch.equal(tm.touched_BHTS, tm.full_BHTS)


def test_from_kv_blocks_equals_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    plan, *_ = clustered_plan(density=0.3)
    tm = tile_masks(plan, 2, 2, BLOCK)
    ours = build_block_mask(tm, 128, 192)
    theirs = create_block_mask(ours.mask_mod, 2, 2, 128, 192, device="cpu", BLOCK_SIZE=BLOCK)
    assert torch.equal(ours.to_dense(), theirs.to_dense())
    assert torch.equal(ours.full_kv_num_blocks, theirs.full_kv_num_blocks)
    n = int(ours.full_kv_num_blocks.max())
    unused = torch.arange(n) >= ours.full_kv_num_blocks[..., None]
    mine = ours.full_kv_indices[..., :n].sort(-1).values.masked_fill(unused, -1)
    other = theirs.full_kv_indices[..., :n].sort(-1).values.masked_fill(unused, -1)
    assert torch.equal(mine, other)


def test_permuting_tokens_with_fixed_labels_changes_nothing():
    q, k, v = clustered_qkv(1, 2, 64, 96, 16)
    gen = torch.Generator().manual_seed(5)
    q_lab, k_lab = torch.randint(0, 4, (1, 2, 64), generator=gen), torch.randint(0, 6, (1, 2, 96), generator=gen)
    kept = torch.rand(1, 2, 4, 6, generator=gen) < 0.5
    out = execute(make_plan(q_lab, k_lab, kept, 0.25), q, k, v)[0]
    pq, pk = torch.randperm(64, generator=gen), torch.randperm(96, generator=gen)
    out_p = execute(make_plan(q_lab[..., pq], k_lab[..., pk], kept, 0.25), q[:, :, pq], k[:, :, pk],
                    v[:, :, pk])[0]
    assert (out_p[:, :, invert_perm(pq[None, None])[0, 0]] - out).abs().max() < 1e-6


@pytest.mark.timeout(600)
def test_compiled_cpu_flex_honours_block_sparsity():
    """Compiled flex (inductor's CPU template, ~30 s per shape to compile) skips empty tiles and equals the
    reference."""
    from torch.nn.attention.flex_attention import flex_attention

    fn = torch.compile(flex_attention, dynamic=False)  # automatic dynamic shapes break the CPU template
    # 128-token tiles, the flex default.
    cases = [(*clustered_plan(density=0.25, compensation=False), 128)]
    gen = torch.Generator().manual_seed(0)
    q2, k2, v2 = (torch.randn(2, 2, n, 16, generator=gen) for n in (256, 384, 384))
    static = sliding_tile_plan((4, 8, 8), (6, 8, 8), (2, 8, 8), (1, 1, 1), 0.25)  # 128-token tiles: full or empty
    assert not tile_masks(static, 2, 2, 128).touched_BHTS.all()
    cases.append((static, q2, k2, v2, 128))
    for base, q, k, v, block in cases:
        plan = base.expanded(2, 2)
        tm = tile_masks(plan, 2, 2, block)
        bm = build_block_mask(tm, q.shape[2], k.shape[2])
        qp = q.gather(2, plan.q_perm_BHQ[..., None].expand(-1, -1, -1, 16))
        kp = k.gather(2, plan.k_perm_BHK[..., None].expand(-1, -1, -1, 16))
        vp = v.gather(2, plan.k_perm_BHK[..., None].expand(-1, -1, -1, 16))
        with torch.no_grad():
            out_s = fn(qp, kp, vp, block_mask=bm, scale=plan.scale)
        out = out_s.gather(2, invert_perm(plan.q_perm_BHQ)[..., None].expand(-1, -1, -1, 16))
        assert (out - exact_reference(plan, q, k, v)[0]).abs().max() < 1e-5
