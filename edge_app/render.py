"""Drawing a result onto its radiograph: the heatmap overlay, the where-to-look box, the legend.

One module for every picture a front end shows or writes (``predict --heatmaps``, the app's
image and its exported report, the web page), so that they cannot drift apart. numpy and
Pillow only.

How the map is shown, and why:

- **fracture / uncertain**: the map is scaled to *its own peak*. The card's absolute scale
  (``cam_scale``, a high percentile of validation maps' peaks) keeps most maps below a third of
  the colour range, so at any opacity a clinician could use the evidence stayed cold and
  invisible. The verdict already says *how strong* the evidence is; the overlay answers *where*.
  Only the part above :data:`FADE_START` of the peak is coloured, fading in up to
  :data:`~edge_app.findings.TOP_REGION_FRACTION` (half the peak: the top region), which is drawn
  at the full opacity in warm colours (yellow → red). The rest of the film stays untouched grey.
- **no fracture**: the map keeps the card's absolute scale, with the same fade, so a film
  without real evidence stays calm (usually no colour at all) instead of having noise stretched
  to full heat; and no box is drawn.
- **the box** bounds the map's top region (found by the runtime, :mod:`edge_app.findings`):
  solid for *fracture*, dashed for *uncertain*. It says where the model's evidence is densest; it
  is not a detection and not an outline of a fracture.
- **the legend** sits in a strip to the right of the image, never on the film: the colour bar
  (blended at the chosen opacity, as on the image), which scale is in use, and the box's style.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge_app.findings import TOP_REGION_FRACTION

#: Opacity of the overlay's top region, the one default of every front end.
DEFAULT_OPACITY = 0.55
#: Share of the shown map's peak below which nothing is coloured; from here the colour fades
#: in, to full opacity at the top region's edge (TOP_REGION_FRACTION).
FADE_START = 0.25
#: The box's colour: cyan, apart from the warm overlay, the verdict colours and grey bone.
BOX_COLOUR = (0, 225, 255)
#: Dark edging on both sides of the box's line, so it reads on white bone as on black air.
HALO_COLOUR = (0, 0, 0)
BOX_STYLES = {"fracture": "solid", "uncertain": "dashed"}

# The warm map: pale yellow at the fade's start, amber at the top region's edge, red at peak.
_ANCHORS = np.array(
    [
        [0.00, 255, 240, 130],
        [FADE_START, 255, 240, 130],
        [TOP_REGION_FRACTION, 255, 200, 0],
        [0.75, 255, 120, 0],
        [1.00, 215, 20, 30],
    ],
    dtype=np.float64,
)
_LEVELS = np.linspace(0.0, 1.0, 256)
#: 256 colours (RGB, float32) indexed by the shown map's value × 255.
COLORMAP = np.stack(
    [np.interp(_LEVELS, _ANCHORS[:, 0], _ANCHORS[:, channel]) for channel in (1, 2, 3)], axis=1
).astype(np.float32)
COLORMAP_BYTES = np.rint(COLORMAP).astype(np.uint8)
#: Each level's share of the chosen opacity: none below FADE_START, TOP_REGION_SHARE at the
#: top region's edge, all of it at the peak, so the bone stays readable under most of the box.
TOP_REGION_SHARE = 0.7
FADE = np.interp(
    _LEVELS, [FADE_START, TOP_REGION_FRACTION, 1.0], [0.0, TOP_REGION_SHARE, 1.0]
).astype(np.float32)

_STRIP = (24, 27, 32)
_TEXT = (228, 231, 236)
_MUTED = (150, 158, 171)


def shown_map(heatmap: np.ndarray, verdict: str) -> np.ndarray:
    """The map as drawn: scaled to its own peak for *fracture* and *uncertain*, as it is (the
    card's absolute scale) for *no fracture*."""
    shown = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)  # a new array
    top = float(shown.max()) if shown.size else 0.0
    if verdict != "no_fracture" and top > 0:
        shown /= top
    return shown


def _levels(heatmap: np.ndarray, verdict: str) -> np.ndarray:
    """:func:`shown_map` as 256 levels (uint8), the index into COLORMAP and FADE."""
    shown = shown_map(heatmap, verdict)
    shown *= 255
    return np.rint(shown, out=shown).astype(np.uint8)


def overlay(
    pixels: np.ndarray, heatmap: np.ndarray | None, verdict: str, opacity: float = DEFAULT_OPACITY
) -> np.ndarray:
    """The radiograph (2-D, [0, 1]) in grey with the shown map blended where it is warm; RGB
    uint8 at the image's size. ``heatmap=None`` gives the grey film alone."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    pixels = np.asarray(pixels)
    grey = np.clip(pixels, 0, 1) * np.float32(255)
    film = Image.fromarray(np.rint(grey, out=grey).astype(np.uint8)).convert("RGB")
    if heatmap is None or opacity == 0:
        return np.array(film)
    if heatmap.shape != pixels.shape:
        raise ValueError(f"heatmap {heatmap.shape} and image {pixels.shape} differ in shape")
    level = _levels(heatmap, verdict)
    weight = np.rint(FADE * (255 * opacity)).astype(np.uint8)[level]
    # Pillow blends in uint8, in C: no float copies of a full-size RGB film (tens of MB for
    # a large one, which the app's peak memory would carry).
    colour = Image.fromarray(COLORMAP_BYTES[level])
    return np.array(Image.composite(colour, film, Image.fromarray(weight)))


def line_width(height: int, width: int) -> int:
    """The box's line width in pixels: about 0.4 % of the longer side, at least 2."""
    return max(2, round(max(height, width) / 250))


def box_pixels(box, height: int, width: int) -> tuple[int, int, int, int]:
    """A normalised (x0, y0, x1, y1) box as inclusive pixel bounds (left, top, right, bottom)."""
    x0, y0, x1, y1 = box
    left, top = int(np.floor(x0 * width)), int(np.floor(y0 * height))
    right, bottom = int(np.ceil(x1 * width)) - 1, int(np.ceil(y1 * height)) - 1
    left, top = min(max(left, 0), width - 1), min(max(top, 0), height - 1)
    return left, top, max(left, min(right, width - 1)), max(top, min(bottom, height - 1))


def draw_box(rgb: np.ndarray, box, style: str, width: int | None = None) -> np.ndarray:
    """Draw ``box`` (normalised) on ``rgb`` in place: a line of :data:`BOX_COLOUR` edged with
    :data:`HALO_COLOUR`, drawn inside the box's bounds so the film's edge never cuts it.
    ``style`` is "solid" or "dashed" (dashes start at each corner, so the shape reads)."""
    if style not in ("solid", "dashed"):
        raise ValueError(f"box style must be 'solid' or 'dashed', got {style!r}")
    height, width_px = rgb.shape[:2]
    line = width or line_width(height, width_px)
    halo = max(1, line // 2)
    left, top, right, bottom = box_pixels(box, height, width_px)
    area = rgb[top : bottom + 1, left : right + 1]  # a view: everything is drawn inside it
    edged = _frame(area.shape[:2], 0, line + 2 * halo)
    stroke = _frame(area.shape[:2], halo, line)
    if style == "dashed":
        dashes = _dashes(area.shape[:2], line)
        stroke &= dashes
        edged &= _grow(dashes, halo)
    area[edged] = HALO_COLOUR
    area[stroke] = BOX_COLOUR
    return rgb


def _frame(shape: tuple[int, int], inset: int, thickness: int) -> np.ndarray:
    """A rectangle's outline ``thickness`` pixels wide, ``inset`` pixels inside ``shape``."""
    height, width = shape
    outer = np.zeros(shape, dtype=bool)
    outer[inset : height - inset, inset : width - inset] = True
    inner = np.zeros(shape, dtype=bool)
    inner[
        inset + thickness : height - inset - thickness,
        inset + thickness : width - inset - thickness,
    ] = True
    return outer & ~inner


def _dashes(shape: tuple[int, int], line: int) -> np.ndarray:
    """Where a dashed outline is drawn: dashes of 4 line widths, gaps of 3, measured from the
    nearer corner along each edge, so every corner starts with a dash."""
    height, width = shape
    dash, period = 4 * line, 7 * line
    rows, columns = np.arange(height), np.arange(width)
    along_x = np.minimum(columns, width - 1 - columns) % period < dash
    along_y = np.minimum(rows, height - 1 - rows) % period < dash
    band = 3 * line  # the outline and its edging lie within this of the edges
    near_x = (columns < band) | (columns >= width - band)
    near_y = (rows < band) | (rows >= height - band)
    return (along_x[None, :] & near_y[:, None]) | (along_y[:, None] & near_x[None, :])


def _grow(mask: np.ndarray, amount: int) -> np.ndarray:
    """The mask dilated by ``amount`` pixels along both axes, for the dashes' edging."""
    grown = mask.copy()
    for _ in range(amount):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown


# --------------------------------------------------------------------------- the legend


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (AttributeError, ImportError, TypeError):  # Pillow without FreeType (e.g. Android)
        return ImageFont.load_default()


def legend_width(height: int, width: int) -> int:
    """Width of the legend strip: a fifth of the longer side, at least 80 pixels."""
    return max(80, round(max(height, width) * 0.2))


def legend(height: int, width: int, verdict: str | None, opacity: float, shown: bool):
    """The legend strip (RGB uint8, ``height`` × :func:`legend_width`) for an image of
    ``height`` × ``width``: the colour bar, its scale, and the box's meaning."""
    strip = _legend(height, legend_width(height, width), verdict, round(opacity, 2), shown)
    return strip.copy()


@functools.lru_cache(maxsize=16)
def _legend(height: int, strip: int, verdict: str | None, opacity: float, shown: bool):
    image = Image.new("RGB", (strip, height), _STRIP)
    draw = ImageDraw.Draw(image)
    size = max(8, min(round(strip / 7.5), round(height / 17)))
    font, small = _font(size), _font(max(8, round(size * 0.85)))
    margin, line = round(size * 0.7), round(size * 1.3)
    y = margin
    draw.text((margin, y), "HEATMAP", font=small, fill=_MUTED)
    y += line
    if not shown:
        draw.text((margin, y), "off", font=font, fill=_TEXT)
        return np.asarray(image)
    bar_top, bar_height, bar_width = y + size // 2, 6 * size, max(6, round(size * 0.9))
    levels = np.linspace(1.0, FADE_START, bar_height)
    index = np.round(levels * 255).astype(int)
    grey = np.float32(110)
    colours = grey + (COLORMAP[index] - grey) * (FADE[index] * opacity)[:, None]
    column = np.repeat(np.round(colours).astype(np.uint8)[:, None, :], bar_width, axis=1)
    image.paste(Image.fromarray(column), (margin, bar_top))
    draw.rectangle(
        (margin - 1, bar_top - 1, margin + bar_width, bar_top + bar_height), outline=_MUTED
    )
    relative = verdict != "no_fracture"
    ticks = [
        (1.0, "peak" if relative else "100%"),
        (TOP_REGION_FRACTION, "50%"),
        (FADE_START, "25%"),
    ]
    for level, label in ticks:
        ty = bar_top + round((1.0 - level) / (1.0 - FADE_START) * (bar_height - 1))
        draw.line((margin + bar_width, ty, margin + bar_width + size // 3, ty), fill=_TEXT)
        draw.text((margin + bar_width + size // 2, ty), label, font=small, fill=_TEXT, anchor="lm")
    y = bar_top + bar_height + round(size * 0.6)
    caption = ["of this image's", "peak"] if relative else ["absolute scale"]
    for text in caption:
        draw.text((margin, y), text, font=small, fill=_MUTED)
        y += round(size * 1.1)
    y += round(size * 0.8)
    style = BOX_STYLES.get(verdict or "")
    if style is None:
        for text in ("no box:", "no fracture", "seen"):
            draw.text((margin, y), text, font=small, fill=_MUTED)
            y += round(size * 1.1)
        return np.asarray(image)
    sample = np.array(image)
    key_width, key_height = round(size * 2.2), round(size * 1.5)
    draw_box(
        sample[y : y + key_height, margin : margin + key_width],
        (0, 0, 1, 1),
        style,
        width=max(2, size // 6),
    )
    image = Image.fromarray(sample)
    draw = ImageDraw.Draw(image)
    draw.text(
        (margin + key_width + size // 2, y + key_height // 2),
        "fracture" if verdict == "fracture" else "uncertain",
        font=small,
        fill=_TEXT,
        anchor="lm",
    )
    y += key_height + round(size * 0.5)
    for text in ("box: the map's", "top region"):
        draw.text((margin, y), text, font=small, fill=_MUTED)
        y += round(size * 1.1)
    return np.asarray(image)


# --------------------------------------------------------------------------- the picture


def render(
    pixels: np.ndarray,
    heatmap: np.ndarray | None,
    verdict: str,
    box=None,
    opacity: float = DEFAULT_OPACITY,
    shown: bool = True,
    with_legend: bool = True,
) -> np.ndarray:
    """The radiograph with its overlay and box, and the legend strip on its right (RGB uint8,
    ``height`` × (``width`` + :func:`legend_width`)). ``shown=False`` draws the film alone (the
    front ends' "show where the model looked" switch); the strip then says the map is off."""
    height, width = np.asarray(pixels).shape
    rgb = overlay(pixels, heatmap if shown else None, verdict, opacity)
    style = BOX_STYLES.get(verdict)
    if shown and style and box is not None:
        draw_box(rgb, box, style)
    if not with_legend:
        return rgb
    strip = legend(height, width, verdict, opacity, shown and heatmap is not None)
    return np.concatenate([rgb, strip], axis=1)


def render_prediction(
    pixels: np.ndarray, prediction, opacity: float = DEFAULT_OPACITY, shown: bool = True
) -> np.ndarray:
    """:func:`render` for an :class:`edge_app.runtime.Prediction` at its image's own size."""
    return render(pixels, prediction.heatmap, prediction.verdict, prediction.box, opacity, shown)
