"""A contact sheet of a few evenly spaced frames, collected while the video streams past.

Looking at a long render should not need decoding the mp4. The collector picks its frame indices up front
from `total_frames`, copies only those frames out of each block it is offered (memory: `count` frames), and
saves a PNG grid whose cells are upscaled with nearest-neighbour so even 32x32 test renders are legible.

Legend: F = frames, H = height, W = width.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_LABEL_PX = 14  # height of the strip under each cell that names its frame index
_GAP_PX = 4


class PreviewCollector:
    """Keeps `count` evenly spaced frames of a `total_frames` video and saves them as one PNG grid."""

    def __init__(self, total_frames: int, count: int = 8, min_cell: int = 128, labels: bool = True):
        if total_frames < 1:
            raise ValueError(f"total_frames must be >= 1, got {total_frames}")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if min_cell < 1:
            raise ValueError(f"min_cell must be >= 1 pixel, got {min_cell}")
        self.total_frames = total_frames
        self.min_cell = min_cell
        self.labels = labels
        picks = np.linspace(0, total_frames - 1, num=min(count, total_frames))
        self.indices: list[int] = sorted({int(round(i)) for i in picks})
        self.frames: dict[int, np.ndarray] = {}

    def offer(self, start_frame: int, frames_FHWC: np.ndarray) -> None:
        """Look at frames [start_frame, start_frame + F) and keep copies of the picked ones."""
        frames_FHWC = np.asarray(frames_FHWC)
        if frames_FHWC.ndim != 4 or frames_FHWC.shape[-1] not in (1, 3) or frames_FHWC.dtype != np.uint8:
            raise ValueError(
                f"frames_FHWC must be uint8 [F, H, W, 3], got {frames_FHWC.dtype} {frames_FHWC.shape}; "
                "convert with (x * 255).round().clip(0, 255).astype(np.uint8)"
            )
        stop = start_frame + len(frames_FHWC)
        for index in self.indices:
            if start_frame <= index < stop:
                self.frames[index] = frames_FHWC[index - start_frame].copy()

    @property
    def complete(self) -> bool:
        return len(self.frames) == len(self.indices)

    def render(self) -> Image.Image:
        """The contact sheet; frames not offered yet are drawn as dark cells."""
        if not self.frames:
            raise ValueError("no picked frame was offered yet; call offer() with the video's blocks first")
        h, w = next(iter(self.frames.values())).shape[:2]
        scale = max(1, math.ceil(self.min_cell / min(h, w)))
        cell_w, cell_h = w * scale, h * scale
        label_h = _LABEL_PX if self.labels else 0
        cols = math.ceil(math.sqrt(len(self.indices)))
        rows = math.ceil(len(self.indices) / cols)
        sheet = Image.new(
            "RGB",
            (cols * cell_w + (cols + 1) * _GAP_PX, rows * (cell_h + label_h) + (rows + 1) * _GAP_PX),
            (24, 24, 24),
        )
        draw = ImageDraw.Draw(sheet)
        for slot, index in enumerate(self.indices):
            x = _GAP_PX + (slot % cols) * (cell_w + _GAP_PX)
            y = _GAP_PX + (slot // cols) * (cell_h + label_h + _GAP_PX)
            frame_HWC = self.frames.get(index)
            if frame_HWC is not None:
                image = Image.fromarray(frame_HWC.squeeze(-1) if frame_HWC.shape[-1] == 1 else frame_HWC)
                sheet.paste(image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST), (x, y))
            else:
                draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=(48, 48, 48))
            if self.labels:
                draw.text((x + 2, y + cell_h + 1), f"#{index}", fill=(220, 220, 220))
        return sheet

    def save(self, path: Path | str) -> Path:
        """Write the contact sheet as PNG (tmp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        self.render().save(tmp, format="PNG")
        os.replace(tmp, path)
        return path
