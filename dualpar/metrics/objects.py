"""Colour-blob detection on toy-world frames, with no pretrained network.

It exists so long videos from the toy model (or any video of coloured objects on a plain background) can be
scored objectively: per frame, the foreground pixels are grouped into 4-connected components, and each large
enough component becomes an object with a palette colour, centroid and size.

Legend: F frames, H/W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualpar.toyworld.world import PALETTE

PALETTE_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_RGB: np.ndarray = np.asarray([PALETTE[c] for c in PALETTE_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Blob:
    """One detected object in one frame."""

    colour: str  # nearest palette colour name
    x: float  # centroid column (pixels)
    y: float  # centroid row (pixels)
    size: int  # pixels in the component
    rgb: tuple[float, float, float]  # mean colour of its core pixels, [0, 1]
    colour_distance: float  # Euclidean distance of `rgb` to the palette colour


def estimate_background(frames_FHW3: np.ndarray) -> np.ndarray:
    """Background colour [3] in [0, 1]: the per-channel median over all pixels (background dominates)."""
    x = np.asarray(frames_FHW3, dtype=np.float32).reshape(-1, 3) / 255.0
    return np.median(x, axis=0)


def label_components(mask_FHW: np.ndarray, classes_FHW: np.ndarray | None = None) -> np.ndarray:
    """4-connected component labels per frame (int32, -1 = background) by vectorised min-label propagation.

    With `classes_FHW`, only neighbours of the same class connect (touching objects of different colours stay
    apart).
    """
    f, h, w = mask_FHW.shape
    big = np.int32(np.iinfo(np.int32).max)
    cls = np.zeros(mask_FHW.shape, dtype=np.int8) if classes_FHW is None else classes_FHW
    same_v = mask_FHW[:, 1:, :] & mask_FHW[:, :-1, :] & (cls[:, 1:, :] == cls[:, :-1, :])
    same_h = mask_FHW[:, :, 1:] & mask_FHW[:, :, :-1] & (cls[:, :, 1:] == cls[:, :, :-1])
    labels = np.where(mask_FHW, np.arange(f * h * w, dtype=np.int32).reshape(f, h, w), big)
    while True:
        nb = labels.copy()
        nb[:, 1:, :] = np.where(same_v, np.minimum(nb[:, 1:, :], labels[:, :-1, :]), nb[:, 1:, :])
        nb[:, :-1, :] = np.where(same_v, np.minimum(nb[:, :-1, :], labels[:, 1:, :]), nb[:, :-1, :])
        nb[:, :, 1:] = np.where(same_h, np.minimum(nb[:, :, 1:], labels[:, :, :-1]), nb[:, :, 1:])
        nb[:, :, :-1] = np.where(same_h, np.minimum(nb[:, :, :-1], labels[:, :, 1:]), nb[:, :, :-1])
        if np.array_equal(nb, labels):
            break
        labels = nb
    return np.where(mask_FHW, labels, -1)


def classify_pixels(x_FHW3: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Palette index per pixel: the colour c whose blend line bg + a (c - bg), a in [0, 1], passes closest."""
    rel = x_FHW3 - background
    dirs_K3 = PALETTE_RGB - background[None, :]
    best = np.full(x_FHW3.shape[:-1], np.inf, dtype=np.float32)
    cls = np.zeros(x_FHW3.shape[:-1], dtype=np.int8)
    for k, d in enumerate(dirs_K3):
        a = np.clip((rel @ d) / float(d @ d), 0.0, 1.0)
        res = np.linalg.norm(rel - a[..., None] * d, axis=-1)
        better = res < best
        best = np.where(better, res, best)
        cls[better] = k
    return cls


def nearest_palette(rgb: np.ndarray) -> tuple[str, float]:
    d = np.linalg.norm(PALETTE_RGB - rgb[None, :], axis=1)
    i = int(np.argmin(d))
    return PALETTE_NAMES[i], float(d[i])


def detect_objects(frames_FHW3: np.ndarray, threshold: float = 0.3, min_pixels: int = 6,
                   background: np.ndarray | None = None) -> list[list[Blob]]:
    """Blobs per frame.

    A pixel is foreground when some channel differs from the background by > threshold; each is classified to
    a palette colour; components are 4-connected runs of one colour with >= `min_pixels` pixels.
    """
    frames = np.asarray(frames_FHW3)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got shape {frames.shape}")
    x_FHW3 = frames.astype(np.float32) / 255.0
    bg = estimate_background(frames) if background is None else np.asarray(background, dtype=np.float32)
    diff_FHW = np.abs(x_FHW3 - bg).max(axis=-1)
    classes_FHW = classify_pixels(x_FHW3, bg)
    labels_FHW = label_components(diff_FHW > threshold, classes_FHW)
    out: list[list[Blob]] = [[] for _ in range(frames.shape[0])]
    fg = np.nonzero(labels_FHW >= 0)
    if fg[0].size == 0:
        return out
    lab = labels_FHW[fg]
    _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    for k, count in enumerate(counts):
        if count < min_pixels:
            continue
        sel = inverse == k
        fi, yi, xi = fg[0][sel], fg[1][sel], fg[2][sel]
        d = diff_FHW[fi, yi, xi]
        core = d >= np.median(d)  # the stronger half: anti-aliased edges are mixed with the background
        rgb = x_FHW3[fi[core], yi[core], xi[core]].mean(axis=0)
        k_cls = int(np.bincount(classes_FHW[fi, yi, xi], minlength=len(PALETTE_NAMES)).argmax())
        colour = PALETTE_NAMES[k_cls]
        dist = float(np.linalg.norm(rgb - PALETTE_RGB[k_cls]))
        out[int(fi[0])].append(Blob(colour, float(xi.mean()), float(yi.mean()), int(count),
                                    (float(rgb[0]), float(rgb[1]), float(rgb[2])), dist))
    for blobs in out:
        blobs.sort(key=lambda b: (b.colour, b.x, b.y))
    return out


def prompt_colours(prompt: str) -> list[str]:
    """Palette colours a toy-world prompt asks for, one per object phrase, in order."""
    return [w for w in prompt.lower().replace(",", " ").split() if w in PALETTE]
