"""Toy-world generator: determinism, ranges, ground truth and long clips."""

import numpy as np

from dualpar.toyworld.world import PALETTE, make_batch, make_clip


def test_same_seed_same_bytes_and_seeds_differ():
    v1, c1, _ = make_clip(7, 16)
    v2, c2, _ = make_clip(7, 16)
    v3, _, _ = make_clip(8, 16)
    assert v1.dtype == np.uint8 and v1.shape == (16, 32, 32, 3)
    assert v1.tobytes() == v2.tobytes() and c1 == c2
    assert v1.tobytes() != v3.tobytes()


def test_caption_and_ground_truth_match_objects():
    for seed in range(20):
        video, caption, clip = make_clip(seed, 40)
        assert 1 <= len(clip.objects) <= 2
        assert clip.positions_FN2.shape == (40, len(clip.objects), 2)
        for obj in clip.objects:
            assert obj.colour in caption and obj.shape in caption and obj.direction in caption
            assert 3 <= obj.size <= 5
        # objects stay fully inside the frame (elastic bounces)
        r = np.array([o.size for o in clip.objects])[None, :, None]
        assert (clip.positions_FN2 >= r - 1e-9).all() and (clip.positions_FN2 <= 31 - r + 1e-9).all()
        # the object's colour is at its centre in frame 0 when it is alone
        if len(clip.objects) == 1:
            x, y = np.round(clip.positions_FN2[0, 0]).astype(int)
            want = np.round(np.array(PALETTE[clip.objects[0].colour]) * 255)
            assert np.abs(video[0, y, x].astype(float) - want).max() <= 1


def test_long_clip_keeps_moving():
    video, _, clip = make_clip(3, 1200)
    assert video.shape == (1200, 32, 32, 3)
    steps = np.linalg.norm(np.diff(clip.positions_FN2, axis=0), axis=-1)
    assert steps.max() <= 2.3 and np.median(steps) >= 0.9  # 1-2 px/frame plus sideways drift


def test_make_batch_shape_range_and_determinism():
    x, caps = make_batch(0, 5, 4, 16)
    x2, caps2 = make_batch(0, 5, 4, 16)
    assert x.shape == (4, 3, 16, 32, 32) and x.dtype == np.float32 and len(caps) == 4
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.array_equal(x, x2) and caps == caps2
    assert not np.array_equal(x, make_batch(0, 6, 4, 16)[0])
