"""Camera frames from RGB pixels, as a PREPROC input takes them (docs/isa.md).

A test bench's stand-in for the camera: ember-run reads image files as RGB and gives the
binary the frame format it was compiled for.
"""

from __future__ import annotations

import numpy as np


def rgb_to_nv12(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB (H, W even) -> NV12 [H * 3 / 2, W]: BT.601 limited-range Y plane,
    then the interleaved U, V plane of each 2x2 block's mean colour."""
    c = rgb.astype(np.int32)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    h, w = r.shape
    block = c.reshape(h // 2, 2, w // 2, 2, 3).sum(axis=(1, 3))
    rb, gb, bb = block[..., 0], block[..., 1], block[..., 2]
    u = ((-38 * rb - 74 * gb + 112 * bb + 512) >> 10) + 128
    v = ((112 * rb - 94 * gb - 18 * bb + 512) >> 10) + 128
    uv = np.stack([u, v], axis=-1).reshape(h // 2, w)
    return np.clip(np.concatenate([y, uv]), 0, 255).astype(np.uint8)


def frame_from_rgb(rgb: np.ndarray, pixel_format: str) -> np.ndarray:
    """A uint8 RGB frame ([1, H, W, 3] or [H, W, 3]) in `pixel_format`, batch axis first."""
    pixels = rgb[0] if rgb.ndim == 4 else rgb
    if pixel_format == "bgr":
        pixels = pixels[..., ::-1]
    elif pixel_format == "nv12":
        pixels = rgb_to_nv12(pixels)
    return np.ascontiguousarray(pixels)[None]
