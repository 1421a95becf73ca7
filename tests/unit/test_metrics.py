"""Long-video metrics: ground-truth clips score as perfect, planted faults are detected."""

import numpy as np

from dualpar.metrics import detect_objects, evaluate, prompt_colours
from dualpar.metrics.longvideo import boundary_flicker
from dualpar.toyworld.world import make_clip

CLEAN_SEEDS = (1, 2, 5)  # clips whose objects never overlap enough to hide one
BLOCKS = list(range(16, 320, 8))  # engine-like joins: a 16-frame first block, then 8-frame blocks


def test_detection_matches_ground_truth():
    video, caption, clip = make_clip(1, 60)
    blobs = detect_objects(video)
    assert all(len(b) == 1 for b in blobs)
    err = [np.hypot(b[0].x - p[0, 0], b[0].y - p[0, 1]) for b, p in zip(blobs, clip.positions_FN2)]
    assert max(err) < 0.6
    assert {b[0].colour for b in blobs} == {clip.objects[0].colour}
    area = np.mean([b[0].size for b in blobs])
    side = 2 * clip.objects[0].size + 1
    assert abs(area - side * side) <= 2 * side  # a square of half-side r covers about (2r+1)^2 pixels
    assert prompt_colours(caption) == [clip.objects[0].colour]


def test_ground_truth_scores_are_perfect():
    for seed in CLEAN_SEEDS:
        video, caption, _ = make_clip(seed, 320)
        r = evaluate(video, BLOCKS, caption)
        assert r.persistence >= 0.98 and r.caption_colour_rate == 1.0
        assert 0.9 < r.boundary_flicker < 1.1
        assert r.jump_rate <= 0.02 and r.vanish_rate <= 0.03
        assert 1.0 <= r.median_displacement <= 2.3
        assert r.colour_drift < 0.02 and r.background_drift < 0.01 and abs(r.count_drift) < 0.05
        assert 0.85 < r.size_drift < 1.2 and r.palette_distance < 0.05
        assert abs(r.boundary_centroid_step - r.inside_centroid_step) < 0.3


def test_shuffled_blocks_raise_flicker():
    video, caption, _ = make_clip(2, 320)
    starts = list(range(0, 320, 16))
    order = np.random.default_rng(0).permutation(len(starts))
    shuffled = np.concatenate([video[starts[i]:starts[i] + 16] for i in order])
    assert boundary_flicker(video, starts) < 1.1
    assert boundary_flicker(shuffled, starts) > 3.0
    r = evaluate(shuffled, starts, caption)
    assert r.boundary_centroid_step > 3 * r.inside_centroid_step
    assert r.jump_rate > 0.03


def test_colour_jump_is_drift_and_persistence_drop():
    video, caption, _ = make_clip(5, 320)
    faulty = video.copy()
    faulty[160:] = faulty[160:][..., [2, 0, 1]]  # red->green, green->blue, ... from frame 160 on
    base, bad = evaluate(video, None, caption), evaluate(faulty, None, caption)
    assert base.persistence >= 0.98 and bad.persistence <= 0.55
    assert bad.colour_drift >= 0.5 > base.colour_drift
    assert bad.caption_colour_rate <= 0.55 and bad.boundary_flicker is None


def test_vanishing_object_lowers_persistence_and_counts():
    video, caption, _ = make_clip(1, 200)
    faulty = video.copy()
    faulty[100:140] = faulty[0, 0, 0]  # background only for 40 frames
    r = evaluate(faulty, None, caption)
    assert abs(r.persistence - 0.8) < 0.01
    assert r.vanish_rate > 0 and r.blobs_per_frame < 0.85
