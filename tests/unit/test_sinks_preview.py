"""PreviewCollector: picks evenly spaced frames from streamed blocks and saves a legible contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dualpar.sinks.preview import PreviewCollector


def gray_frames(start: int, count: int, size: int = 32) -> np.ndarray:
    return np.stack([np.full((size, size, 3), (start + k) % 256, np.uint8) for k in range(count)])


def test_keeps_only_picked_frames_and_saves_grid(tmp_path):
    collector = PreviewCollector(total_frames=100, count=8)
    assert collector.indices == [0, 14, 28, 42, 57, 71, 85, 99]
    for start in range(0, 100, 9):
        collector.offer(start, gray_frames(start, min(9, 100 - start)))
    assert collector.complete and sorted(collector.frames) == collector.indices
    assert all(collector.frames[i][0, 0, 0] == i for i in collector.indices)

    path = collector.save(tmp_path / "preview.png")
    image = Image.open(path)
    # 3 x 3 grid of 128 px cells (32 px frames upscaled 4x), 4 px gaps, 14 px label strips.
    assert image.size == (3 * 128 + 4 * 4, 3 * (128 + 14) + 4 * 4)
    pixels = np.asarray(image)
    assert pixels[4 + 64, 4 + 128 + 4 + 64, 0] == 14  # second cell shows frame 14, nearest-neighbour
    assert not (tmp_path / "preview.png.tmp").exists()


def test_short_video_and_partial_sheet(tmp_path):
    collector = PreviewCollector(total_frames=3, count=8, labels=False)
    assert collector.indices == [0, 1, 2]
    with pytest.raises(ValueError, match="offer"):
        collector.render()
    collector.offer(0, gray_frames(0, 1, size=256))
    image = collector.render()  # missing frames render as placeholders
    assert image.size == (2 * 256 + 3 * 4, 2 * 256 + 3 * 4)
    with pytest.raises(ValueError, match="uint8"):
        collector.offer(1, gray_frames(1, 1).astype(np.float32))
