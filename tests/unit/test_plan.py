"""The block-queue plan: docs/algorithm.md's staircase, step counts, ordering and dependencies."""

from __future__ import annotations

import pytest

from dualpar.schedule.blockwise import BlockGeometry, blocks_for_latents, blockwise_plan, idle_fraction_estimate


@pytest.mark.parametrize("n,steps", [(1, 1), (1, 5), (3, 4), (7, 3), (10, 10), (25, 4)])
def test_staircase_and_counts(n, steps):
    plan = blockwise_plan(n, steps)
    assert len(plan.iterations) == steps + n
    assert len(plan.items) == n * steps
    seen = {}
    for it in plan.iterations:
        blocks = [item.block for item in it.items]
        assert blocks == sorted(blocks, reverse=True), "tail (noisiest) first, head last"
        assert len(blocks) <= min(n, steps)
        for item in it.items:
            assert item.step == it.index - item.block
            seen.setdefault(item.block, []).append((it.index, item.step))
    for k in range(n):
        assert seen[k] == [(k + s, s) for s in range(steps)], "block k runs at iterations k..k+T-1"
    assert max(len(it.items) for it in plan.iterations) == min(n, steps)
    assert [item.order for item in plan.items] == list(range(n * steps))


def test_join_finish_and_right_context():
    plan = blockwise_plan(4, 3)
    assert [it.joined for it in plan.iterations] == [0, 1, 2, 3, None, None, None]
    assert [it.finished for it in plan.iterations] == [None, None, None, 0, 1, 2, 3]
    for it in plan.iterations:
        for pos, item in enumerate(it.items):
            assert item.has_right == (pos > 0), "only the tail lacks a right neighbour in the cache"


def test_dependencies_follow_left_context_mode():
    plan = blockwise_plan(5, 4)
    item = next(i for i in plan.items if i.block == 2 and i.step == 1)
    ahead = plan.dependencies(item, "ahead")
    same = plan.dependencies(item, "same")
    assert set(ahead) == {plan.item_index(2, 0), plan.item_index(1, 1)}
    assert set(same) == {plan.item_index(2, 0), plan.item_index(1, 0)}
    for it in plan.items:
        assert all(d < it.order for d in plan.dependencies(it, "ahead")), "dependencies come earlier"
        assert all(d < it.order for d in plan.dependencies(it, "same"))


def test_geometry_tiles_latents():
    for p, c, n in [(2, 1, 5), (8, 8, 3), (4, 0, 6), (3, 2, 1)]:
        geo = BlockGeometry(p, c, n)
        owned = [i for k in range(n) for i in geo.own_range(k)]
        assert owned == list(range(geo.total_latents)) == list(range(n * p + c))
        for k in range(n):
            w = geo.window_range(k)
            assert len(w) == p + c
            assert list(w)[geo.own_offset(k):] == list(geo.own_range(k))[: len(w) - geo.own_offset(k)]


def test_blocks_for_latents_rounds_up():
    assert blocks_for_latents(1, 4, 2) == 1
    assert blocks_for_latents(6, 4, 2) == 1
    assert blocks_for_latents(7, 4, 2) == 2
    assert blocks_for_latents(34, 8, 8) == 4  # 4*8+8 = 40 >= 34 > 32


def test_geometry_rejects_bad_context():
    with pytest.raises(ValueError, match="context_latents"):
        BlockGeometry(2, 3, 1)


def test_idle_fraction_formula():
    assert idle_fraction_estimate(1, 50, 10) == 0.0
    assert idle_fraction_estimate(4, 50, 10) == pytest.approx(11 / (11 + 500))
