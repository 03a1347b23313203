"""Acquisition shifts: how a radiograph from another machine or another department differs.

Each shift is a function ``(pixels, rng) -> pixels`` on a 2-D float32 radiograph in [0, 1] (as
:func:`edge_app.radiograph.load_radiograph` returns it) that returns a new float32 array in
[0, 1]. Random parameters come only from the :class:`numpy.random.Generator` handed in;
:func:`shift_generator` makes one per (base seed, shift, image), so every run draws the same
parameters for the same film whichever other films are scored. numpy and Pillow only.

Severities are moderate: each is a change a film from another site plausibly shows, a little
beyond the training augmentation (brightness/contrast ±15 %, gamma 0.85–1.18, noise σ 1–3 %,
3×3 blur; docs/data.md). Sizes that scale with the film are fractions of its long side, so a
1,024-px and a 454-px film are shifted alike once both are letterboxed to the model's input.

========================  ===================================================================
shift                     what it does
========================  ===================================================================
``exposure_gamma``        ``gain · x^γ``: γ in 0.71–0.83 or 1.2–1.4 (darker or brighter
                          mid-tones), gain 0.8–0.9 or 1.1–1.2, each direction at random
``contrast``              ``m + c (x − m)`` around the film's mean m: c in 0.67–0.8 or 1.25–1.5
``noise``                 additive Gaussian noise, σ 0.03–0.05 per pixel at the film's own
                          resolution (the letterbox's downscale averages part of it away)
``blur``                  Gaussian blur, σ 0.4–0.6 % of the long side (4–6 px on 1,024 px)
``jpeg_q20``              8-bit JPEG round trip at quality 20
``half_resolution``       2 × 2 box average, kept at half size (down only, no upscale: a
                          detector with half the pixels; preprocessing resizes it anyway)
``collimation_crop``      keep 75–85 % of the height and of the width (independently), the
                          window's centre moved by up to 5 % of the film: a tighter collimation
``text_markers``          a side marker "L" or "R" (about 8 % of the short side) in a top
                          corner and a line of burned-in text (about 3 %) in a bottom corner,
                          white, Pillow's default font
``rotation_90``           a quarter turn, clockwise or counter-clockwise (height ↔ width)
``inverted``              ``1 − x``: bone dark on a white background
========================  ===================================================================
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: The base seed of the benchmark's shifts (``fracture-edge bench --shifts``).
DEFAULT_SHIFT_SEED = 20261130
BURNED_IN_TEXT = "ST ELSEWHERE HOSPITAL  ID 0000000  2026-11-30 08:14  55 kV 2.5 mAs"


def shift_generator(seed: int, shift: str, image_key: str) -> np.random.Generator:
    """The generator of one shift on one film: the same for the same (seed, shift, film)."""
    return np.random.default_rng(
        [int(seed), zlib.crc32(shift.encode()), zlib.crc32(image_key.encode())]
    )


def _checked(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(
            f"a shift takes a 2-D radiograph, got shape {pixels.shape}; pass "
            "load_radiograph(path).pixels"
        )
    return pixels


def _done(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor in [low, high] or its reciprocal range, each with probability 1/2."""
    factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return factor if rng.random() < 0.5 else 1.0 / factor


# --------------------------------------------------------------------------- intensity


def exposure_gamma(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``gain · x^γ``: γ in 0.71–0.83 or 1.2–1.4, gain 0.8–0.9 or 1.1–1.2."""
    pixels = _checked(pixels)
    gamma = _signed(rng, 1.2, 1.4)
    gain = 1.0 + (1 if rng.random() < 0.5 else -1) * rng.uniform(0.1, 0.2)
    return _done(gain * np.power(pixels, gamma))


def contrast(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``m + c (x − m)`` around the film's mean: c in 0.67–0.8 or 1.25–1.5."""
    pixels = _checked(pixels)
    mean = float(pixels.mean())
    return _done(mean + _signed(rng, 1.25, 1.5) * (pixels - mean))


def inverted(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverted polarity (``1 − x``), as a MONOCHROME1 film read without its flag shows."""
    return _done(1.0 - _checked(pixels))


# --------------------------------------------------------------------------- degradation


def noise(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, σ 0.03–0.05 per pixel."""
    pixels = _checked(pixels)
    sigma = rng.uniform(0.03, 0.05)
    return _done(pixels + sigma * rng.standard_normal(pixels.shape, dtype=np.float32))


def _blur_matrix(length: int, sigma: float) -> np.ndarray:
    """Row-stochastic Gaussian weights (renormalised where the kernel leaves the film)."""
    positions = np.arange(length, dtype=np.float32)
    weights = np.exp(-0.5 * ((positions[:, None] - positions[None, :]) / sigma) ** 2)
    weights[weights < 1e-4] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, ``sigma`` in pixels, as two matrix products (numpy only)."""
    pixels = _checked(pixels)
    rows = _blur_matrix(pixels.shape[0], sigma)
    columns = _blur_matrix(pixels.shape[1], sigma)
    return (rows @ pixels @ columns.T).astype(np.float32)


def blur(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, σ 0.4–0.6 % of the long side."""
    pixels = _checked(pixels)
    sigma = rng.uniform(0.004, 0.006) * max(pixels.shape)
    return _done(gaussian_blur(pixels, max(sigma, 0.5)))


def jpeg_q20(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit JPEG round trip at quality 20."""
    pixels = _checked(pixels)
    buffer = io.BytesIO()
    eight_bit = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(eight_bit).save(buffer, format="JPEG", quality=20)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return _done(np.asarray(decoded.convert("L"), dtype=np.float32) / 255.0)


def half_resolution(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 2 × 2 box average, kept at half size (an odd last row or column is dropped)."""
    pixels = _checked(pixels)
    if min(pixels.shape) < 2:
        raise ValueError(f"a {pixels.shape} film is too small to halve")
    height, width = (side // 2 for side in pixels.shape)
    cut = pixels[: 2 * height, : 2 * width]
    return _done(cut.reshape(height, 2, width, 2).mean(axis=(1, 3)))


# --------------------------------------------------------------------------- geometry


def collimation_crop(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep 75–85 % of each side, the window's centre moved by up to 5 % of the film."""
    pixels = _checked(pixels)
    window = []
    for side in pixels.shape:
        kept = max(1, int(round(side * rng.uniform(0.75, 0.85))))
        shift = int(round(side * rng.uniform(-0.05, 0.05)))
        start = int(np.clip((side - kept) // 2 + shift, 0, side - kept))
        window.append(slice(start, start + kept))
    return _done(pixels[tuple(window)])


def rotation_90(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A quarter turn, clockwise or counter-clockwise."""
    return _done(np.rot90(_checked(pixels), k=1 if rng.random() < 0.5 else 3))


# --------------------------------------------------------------------------- burned-in text


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1, or no FreeType: the small bitmap font
        return ImageFont.load_default()


def text_markers(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A white "L" or "R" side marker in a top corner and a line of text in a bottom corner."""
    pixels = _checked(pixels)
    height, width = pixels.shape
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    margin = max(2, int(0.03 * min(height, width)))
    marker_font = _font(max(8, int(0.08 * min(height, width))))
    marker = "L" if rng.random() < 0.5 else "R"
    left, top, right, _ = draw.textbbox((0, 0), marker, font=marker_font)
    x = margin - left if rng.random() < 0.5 else width - margin - right
    draw.text((x, margin - top), marker, fill=255, font=marker_font)
    size = max(6, int(0.03 * min(height, width)))
    left, _, right, _ = draw.textbbox((0, 0), BURNED_IN_TEXT, font=_font(size))
    size = max(6, min(size, int(size * (width - 2 * margin) / max(right - left, 1))))
    text_font = _font(size)  # as large as fits on one line, up to 3 % of the short side
    left, top, right, bottom = draw.textbbox((0, 0), BURNED_IN_TEXT, font=text_font)
    x = margin - left if rng.random() < 0.5 else max(0, width - margin - right)
    draw.text((x, height - margin - bottom), BURNED_IN_TEXT, fill=255, font=text_font)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    return _done(pixels * (1.0 - alpha) + alpha)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Shift:
    name: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    severity: str


SHIFTS: dict[str, Shift] = {
    shift.name: shift
    for shift in (
        Shift("exposure_gamma", exposure_gamma, "γ 0.71–0.83 or 1.2–1.4, gain ±10–20 %"),
        Shift("contrast", contrast, "contrast × 0.67–0.8 or 1.25–1.5 around the mean"),
        Shift("noise", noise, "Gaussian σ 0.03–0.05 per pixel"),
        Shift("blur", blur, "Gaussian σ 0.4–0.6 % of the long side"),
        Shift("jpeg_q20", jpeg_q20, "JPEG quality 20 round trip"),
        Shift("half_resolution", half_resolution, "2 × 2 box average, half size"),
        Shift("collimation_crop", collimation_crop, "keep 75–85 % of each side"),
        Shift("text_markers", text_markers, "white L/R marker and a line of text"),
        Shift("rotation_90", rotation_90, "90° turn, either way"),
        Shift("inverted", inverted, "inverted polarity, 1 − x"),
    )
}
SHIFT_NAMES = tuple(SHIFTS)


def apply_shift(name: str, pixels: np.ndarray, seed: int, image_key: str) -> np.ndarray:
    """Shift ``pixels`` by the registered shift ``name``, seeded by (seed, name, image_key)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; valid: {', '.join(SHIFT_NAMES)}")
    return SHIFTS[name].apply(pixels, shift_generator(seed, name, image_key))
