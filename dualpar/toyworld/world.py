"""Procedural toy world: coloured balls and squares bouncing on a dark background, with template captions.

It exists so dualpar ships a video model that trains from scratch on one CPU core in under an hour and whose
outputs can be scored without any pretrained network: every clip is deterministic from a seed, any length
(long clips give ground truth for the long-video metrics), and comes with per-frame object positions.

Legend: F frames, H/W pixels, N objects, B batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKGROUND: tuple[float, float, float] = (0.08, 0.08, 0.10)
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.12),
    "green": (0.12, 0.85, 0.15),
    "blue": (0.18, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.12),
    "cyan": (0.12, 0.88, 0.92),
    "magenta": (0.90, 0.15, 0.90),
}
SHAPES: tuple[str, ...] = ("ball", "square")
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
                                              "down": (0.0, 1.0)}
SIZE_WORDS: dict[int, str] = {3: "small", 4: "", 5: "big"}
CAPTION_WORDS: tuple[str, ...] = ("a", "and", "moving", "small", "big", *PALETTE, *SHAPES, *DIRECTIONS)


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a clip: what it looks like and how it starts moving (positions live in `Clip`)."""

    shape: str
    colour: str
    size: int  # radius (ball) or half side (square) in pixels, 3..5
    direction: str  # main direction word of the caption
    start_xy: tuple[float, float]
    velocity_xy: tuple[float, float]  # pixels per frame

    def phrase(self) -> str:
        """The caption fragment, e.g. 'a small red ball moving left'."""
        words = ["a", SIZE_WORDS[self.size], self.colour, self.shape, "moving", self.direction]
        return " ".join(w for w in words if w)


@dataclass
class Clip:
    """A rendered clip with its caption and ground truth."""

    video_FHW3: np.ndarray  # uint8
    caption: str
    objects: list[ObjectSpec]
    positions_FN2: np.ndarray = field(repr=False)  # float (x, y) centre of each object per frame


def sample_objects(rng: np.random.Generator, size: int = 32,
                   n_objects: int | None = None) -> list[ObjectSpec]:
    """Draw 1-2 objects (distinct colours) with the toy-world distribution."""
    n = int(rng.integers(1, 3)) if n_objects is None else n_objects
    colours = rng.choice(list(PALETTE), size=n, replace=False)
    objs = []
    for colour in colours:
        shape = SHAPES[int(rng.integers(0, 2))]
        radius = int(rng.integers(3, 6))
        direction = list(DIRECTIONS)[int(rng.integers(0, 4))]
        dx, dy = DIRECTIONS[direction]
        speed = float(rng.uniform(1.0, 2.0))
        side = float(rng.uniform(-0.5, 0.5))
        vel = (dx * speed + dy * side, dy * speed + dx * side)
        lo, hi = radius, size - 1 - radius
        start = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        objs.append(ObjectSpec(shape, str(colour), radius, direction, start, vel))
    return objs


def trajectory(obj: ObjectSpec, frames: int, size: int = 32) -> np.ndarray:
    """[F, 2] centre positions with elastic bounces off the walls (centre kept in [r, size-1-r])."""
    lo, hi = float(obj.size), float(size - 1 - obj.size)
    pos_F2 = np.empty((frames, 2), dtype=np.float64)
    p = np.array(obj.start_xy, dtype=np.float64)
    v = np.array(obj.velocity_xy, dtype=np.float64)
    for f in range(frames):
        pos_F2[f] = p
        p = p + v
        for a in range(2):
            if p[a] < lo:
                p[a], v[a] = 2 * lo - p[a], -v[a]
            elif p[a] > hi:
                p[a], v[a] = 2 * hi - p[a], -v[a]
    return pos_F2


def render(objects: list[ObjectSpec], positions_FN2: np.ndarray, size: int = 32) -> np.ndarray:
    """Anti-aliased float frames [F, H, W, 3] in [0, 1]; later objects are drawn over earlier ones."""
    frames = positions_FN2.shape[0]
    coords = np.arange(size, dtype=np.float32)
    video_FHW3 = np.empty((frames, size, size, 3), dtype=np.float32)
    video_FHW3[:] = np.asarray(BACKGROUND, dtype=np.float32)
    for i, obj in enumerate(objects):
        cx_F = positions_FN2[:, i, 0].astype(np.float32)[:, None, None]
        cy_F = positions_FN2[:, i, 1].astype(np.float32)[:, None, None]
        dx_FHW = coords[None, None, :] - cx_F
        dy_FHW = coords[None, :, None] - cy_F
        if obj.shape == "ball":
            cover_FHW = np.clip(obj.size + 0.5 - np.sqrt(dx_FHW**2 + dy_FHW**2), 0.0, 1.0)
        else:
            cover_FHW = np.clip(obj.size + 0.5 - np.abs(dx_FHW), 0.0, 1.0) * np.clip(
                obj.size + 0.5 - np.abs(dy_FHW), 0.0, 1.0)
        colour = np.asarray(PALETTE[obj.colour], dtype=np.float32)
        a = cover_FHW[..., None]
        video_FHW3 = video_FHW3 * (1.0 - a) + colour * a
    return video_FHW3


def caption_for(objects: list[ObjectSpec]) -> str:
    """Template caption joining the objects' phrases with 'and'."""
    return " and ".join(o.phrase() for o in objects)


def sample_clip(rng: np.random.Generator, frames: int, size: int = 32) -> tuple[np.ndarray, str, np.ndarray]:
    """Float frames [F, H, W, 3] in [0, 1], caption and positions [F, N, 2] drawn from `rng`."""
    objects = sample_objects(rng, size)
    pos_FN2 = np.stack([trajectory(o, frames, size) for o in objects], axis=1)
    return render(objects, pos_FN2, size), caption_for(objects), pos_FN2


def make_clip(seed: int, frames: int, size: int = 32) -> tuple[np.ndarray, str, Clip]:
    """Deterministic clip from `seed`: (uint8 video [F, H, W, 3], caption, Clip with ground truth)."""
    rng = np.random.default_rng(seed)
    objects = sample_objects(rng, size)
    pos_FN2 = np.stack([trajectory(o, frames, size) for o in objects], axis=1)
    video = to_uint8(render(objects, pos_FN2, size))
    caption = caption_for(objects)
    return video, caption, Clip(video, caption, objects, pos_FN2)


def to_uint8(video_FHW3: np.ndarray) -> np.ndarray:
    """[0, 1] float frames -> uint8 with rounding."""
    return (np.clip(video_FHW3, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def make_batch(seed: int, step: int, batch: int, frames: int, size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Training batch for `step`: float32 [B, 3, F, H, W] in [-1, 1] (uint8-quantised) and captions."""
    rng = np.random.default_rng([seed, step])
    videos, captions = [], []
    for _ in range(batch):
        video_FHW3, caption, _ = sample_clip(rng, frames, size)
        videos.append(to_uint8(video_FHW3))
        captions.append(caption)
    x_BFHW3 = np.stack(videos).astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x_BFHW3.transpose(0, 4, 1, 2, 3)), captions
