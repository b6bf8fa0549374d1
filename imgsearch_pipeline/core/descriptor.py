"""A weight-free image descriptor: colour, gradient and coarse layout.

Built to be robust to what near-duplicates do to a picture (mirror flips, modest crops,
small colour shifts) so that the demo's results can be judged by eye without a model.
Every block is mirror-symmetric, so a horizontal flip gives the same vector.
"""

import numpy as np
from PIL import Image

DESCRIPTOR_VERSION = 1
_SIDE = 96
_HUE_BINS, _SAT_BINS, _VAL_BINS = 12, 4, 4
_ORIENT_BINS = 8
_THUMB = 8
DESCRIPTOR_DIM = _HUE_BINS * _SAT_BINS * _VAL_BINS + 2 * _ORIENT_BINS + _THUMB * _THUMB


def _soft_histogram(values: np.ndarray, bins: int, weights: np.ndarray, circular: bool):
    """Linear interpolation between neighbouring bins; returns (low bin, high bin, w_low, w_high)."""
    position = values * bins - 0.5
    low = np.floor(position).astype(np.int64)
    frac = position - low
    high = low + 1
    if circular:
        low, high = low % bins, high % bins
    else:
        low, high = np.clip(low, 0, bins - 1), np.clip(high, 0, bins - 1)
    return low, high, weights * (1 - frac), weights * frac


def _colour_block(hsv: np.ndarray) -> np.ndarray:
    h, s, v = (hsv[..., i].ravel() / 255.0 for i in range(3))
    ones = np.ones_like(h)
    hist = np.zeros((_HUE_BINS, _SAT_BINS, _VAL_BINS))
    hl, hh, hwl, hwh = _soft_histogram(h, _HUE_BINS, ones, circular=True)
    sl, sh, swl, swh = _soft_histogram(s, _SAT_BINS, ones, circular=False)
    vl, vh, vwl, vwh = _soft_histogram(v, _VAL_BINS, ones, circular=False)
    for hi, hw in ((hl, hwl), (hh, hwh)):
        for si, sw in ((sl, swl), (sh, swh)):
            for vi, vw in ((vl, vwl), (vh, vwh)):
                np.add.at(hist, (hi, si, vi), hw * sw * vw)
    return hist.ravel()


def _gradient_block(gray: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(gray)
    magnitude = np.hypot(gx, gy)
    # Fold orientation into [0, pi/2]: invariant to gradient sign and to a mirror flip.
    angle = np.abs(np.arctan2(gy, gx))
    angle = np.where(angle > np.pi / 2, np.pi - angle, angle) / (np.pi / 2)
    rows, cols = np.indices(gray.shape)
    centre = (gray.shape[0] - 1) / 2
    inner = np.hypot(rows - centre, cols - centre) < gray.shape[0] / 3
    blocks = []
    for region in (inner, ~inner):
        hist = np.zeros(_ORIENT_BINS)
        lo, hi, wl, wh = _soft_histogram(angle[region], _ORIENT_BINS, magnitude[region], False)
        np.add.at(hist, lo, wl)
        np.add.at(hist, hi, wh)
        blocks.append(hist)
    return np.concatenate(blocks)


def _layout_block(gray: np.ndarray) -> np.ndarray:
    small = np.asarray(
        Image.fromarray(gray.astype(np.uint8)).resize((_THUMB, _THUMB), Image.Resampling.BOX),
        dtype=np.float64,
    )
    symmetric = (small + small[:, ::-1]) / 2
    return symmetric.ravel() - symmetric.mean()


def _unit(block: np.ndarray) -> np.ndarray:
    return block / max(float(np.linalg.norm(block)), 1e-12)


def color_texture_descriptor(image: Image.Image) -> np.ndarray:
    """A float32 vector of DESCRIPTOR_DIM values (not yet normalised as a whole)."""
    rgb = image.convert("RGB").resize((_SIDE, _SIDE), Image.Resampling.BILINEAR)
    hsv = np.asarray(rgb.convert("HSV"), dtype=np.float64)
    gray = np.asarray(rgb.convert("L"), dtype=np.float64)
    colour = _unit(np.sqrt(_colour_block(hsv)))  # Hellinger: tames dominant colours
    gradient = _unit(np.sqrt(_gradient_block(gray)))
    layout = _unit(_layout_block(gray))
    return np.concatenate([1.0 * colour, 0.6 * gradient, 0.6 * layout]).astype(np.float32)
