"""split_layers: contiguous cover, explicit validation, even remainder placement, cost-aware balance."""

from __future__ import annotations

import pytest

from dualpar.plan_split import split_layers


def _counts(ranges: list[range]) -> list[int]:
    return [len(r) for r in ranges]


@pytest.mark.parametrize("layers,stages", [(30, 8), (40, 8), (4, 4), (7, 3), (30, 1), (2, 2)])
def test_ranges_are_contiguous_and_cover_every_layer(layers: int, stages: int) -> None:
    for kwargs in ({}, {"costs": [1.5] + [0.0] * (stages - 1)}):
        ranges = split_layers(layers, stages, **kwargs)
        assert len(ranges) == stages
        assert ranges[0].start == 0 and ranges[-1].stop == layers
        assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:]))
        assert all(len(r) >= 1 for r in ranges)


def test_even_split_gives_the_remainder_to_the_last_stages() -> None:
    assert _counts(split_layers(30, 8)) == [3, 3, 4, 4, 4, 4, 4, 4]
    assert _counts(split_layers(40, 8)) == [5] * 8


def test_explicit_split_is_used_and_validated() -> None:
    assert split_layers(6, 2, split=[2, 4]) == [range(0, 2), range(2, 6)]
    with pytest.raises(ValueError, match="parallel.split"):
        split_layers(6, 2, split=[3, 2])  # sums to 5
    with pytest.raises(ValueError, match="parallel.split"):
        split_layers(6, 3, split=[3, 3])  # wrong length
    with pytest.raises(ValueError, match="parallel.split"):
        split_layers(6, 2, split=[0, 6])  # empty stage
    with pytest.raises(ValueError, match="parallel.stages"):
        split_layers(3, 4)
    with pytest.raises(ValueError, match="parallel.stages"):
        split_layers(3, 0)


def test_cost_aware_gives_a_heavier_stage_fewer_layers() -> None:
    counts = _counts(split_layers(12, 4, costs=[2.0, 0.0, 0.0, 0.0]))
    assert sum(counts) == 12
    assert counts[0] < min(counts[1:])
    # The largest load (layers + extra cost) is minimal: no split does better.
    assert max(c + e for c, e in zip(counts, [2.0, 0, 0, 0])) == pytest.approx(3.5, abs=0.51)
    assert _counts(split_layers(30, 8, costs=[0.0] * 8)) == _counts(split_layers(30, 8))
    with pytest.raises(ValueError):
        split_layers(12, 4, costs=[1.0, 0.0])
