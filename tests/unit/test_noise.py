"""Coordinated noise: documented first draw, no repeated frame inside a window, C = 0, resumable state."""

from __future__ import annotations

import pytest
import torch

from dualpar.schedule.noise import CoordinatedNoise


def _frames(x):
    return [x[:, :, i] for i in range(x.shape[2])]


def test_first_draw_is_the_documented_randn():
    pool = CoordinatedNoise(7, 4, 3, 2, 5, 6)
    expected = torch.randn((1, 4, 5, 5, 6), generator=torch.Generator("cpu").manual_seed(7))
    assert torch.equal(pool.next_block(), expected)


@pytest.mark.parametrize("p,c", [(4, 2), (3, 3), (5, 1)])
def test_no_frame_repeats_inside_a_window(p, c):
    pool = CoordinatedNoise(0, 2, p, c, 3, 3)
    prev = pool.next_block()  # block 0: P+C frames
    first_frames = _frames(prev)
    for _ in range(12):
        own = pool.next_block()
        assert own.shape[2] == p
        window = torch.cat([prev[:, :, -c:], own], dim=2)
        frames = _frames(window)
        for i in range(len(frames)):
            for j in range(i + 1, len(frames)):
                assert not torch.equal(frames[i], frames[j])
        # the same noise content recurs through the video
        assert all(any(torch.equal(f, g) for g in first_frames) for f in _frames(own))
        prev = own


def test_zero_context_reshuffles():
    pool = CoordinatedNoise(3, 2, 4, 0, 2, 2)
    a = pool.next_block()
    b = pool.next_block()
    assert a.shape == b.shape == (1, 2, 4, 2, 2)
    assert sorted(float(f.sum()) for f in _frames(a)) == pytest.approx(sorted(float(f.sum()) for f in _frames(b)))


def test_same_seed_same_sequence_and_state_roundtrip():
    a, b = CoordinatedNoise(11, 2, 3, 1, 2, 2), CoordinatedNoise(11, 2, 3, 1, 2, 2)
    for _ in range(3):
        assert torch.equal(a.next_block(), b.next_block())
    state = a.state_dict()
    expected = [a.next_block() for _ in range(4)]
    c = CoordinatedNoise(999, 2, 3, 1, 2, 2)
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next_block()) for x in expected)


def test_uncoordinated_noise_is_fresh():
    pool = CoordinatedNoise(1, 2, 3, 1, 2, 2, coordinated=False)
    first = _frames(pool.next_block())
    own = pool.next_block()
    assert not any(torch.equal(f, g) for f in _frames(own) for g in first)
