"""Training-only augmentation: the policy (:class:`AugmentConfig`, named in :data:`POLICIES`)
and its reference implementation with albumentations, seeded by its own random state.

:mod:`train.device_augment` applies the same fields batched on tensors. The default policy is
mild (fracture lines are thin, so heavy blur or large rotations erase the signal); the "strong"
one widens exposure, contrast, noise and geometry and adds compression, lower resolution, quarter
turns and inverted polarity, the ways another hospital's films differ. Evaluation never
augments: :func:`build_augmentation` returns ``None`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edge_app._optional import require
from edge_app.errors import UsageError


@dataclass(frozen=True)
class AugmentConfig:
    """The policy. Probabilities are per image; ranges are (low, high)."""

    rotate_degrees: float = 10.0
    scale: float = 0.10
    shift: float = 0.06
    horizontal_flip: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.15
    gamma: tuple[int, int] = (85, 118)
    clahe: float = 0.2
    blur: float = 0.1
    noise: float = 0.15
    noise_std: tuple[float, float] = (0.01, 0.03)
    coarse_dropout: float = 0.2
    rotate90: float = 0.0  # a quarter, half or three-quarter turn (films stored sideways)
    invert: float = 0.0  # inverted polarity inside the film (the letterbox stays the fill)
    jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (20, 90)
    downscale: float = 0.0  # down then up again: a lower-resolution detector
    downscale_range: tuple[float, float] = (0.4, 0.9)
    fill: float = 0.0


#: Named policies (``TrainConfig.augment_policy``). "default" is the mild policy every earlier
#: model was trained with; "strong" adds what other hospitals' films differ by (exposure,
#: contrast, noise, compression, resolution, orientation, polarity) at wider ranges.
POLICIES = {
    "default": AugmentConfig(),
    "strong": AugmentConfig(
        rotate_degrees=15.0,
        scale=0.2,
        shift=0.08,
        brightness=0.25,
        contrast=0.25,
        gamma=(70, 150),
        clahe=0.3,
        blur=0.2,
        noise=0.3,
        noise_std=(0.01, 0.05),
        coarse_dropout=0.3,
        rotate90=0.25,
        invert=0.1,
        jpeg=0.3,
        downscale=0.25,
    ),
}


def policy(name: str, fill: float = 0.0) -> AugmentConfig:
    if name not in POLICIES:
        raise UsageError(f"unknown augmentation policy {name!r}; valid: {', '.join(POLICIES)}")
    return replace(POLICIES[name], fill=fill)


def build_augmentation(config: AugmentConfig, seed: int, training: bool = True):
    """An albumentations pipeline on 2-D float32 images in [0, 1], or ``None`` when not training.

    It owns its random state (``seed``): nothing here touches numpy's or Python's global seeds.
    """
    if not training:
        return None
    albumentations = require("albumentations", "augment training images")
    a = albumentations
    return a.Compose(
        [
            a.Affine(
                scale=(1 - config.scale, 1 + config.scale),
                translate_percent=(-config.shift, config.shift),
                rotate=(-config.rotate_degrees, config.rotate_degrees),
                border_mode=0,
                fill=config.fill,
                p=0.8,
            ),
            a.HorizontalFlip(p=config.horizontal_flip),
            a.RandomRotate90(p=config.rotate90),
            a.RandomBrightnessContrast(config.brightness, config.contrast, p=0.5),
            a.RandomGamma(gamma_limit=config.gamma, p=0.3),
            a.CLAHE(clip_limit=2.0, tile_grid_size=(8, 8), p=config.clahe),
            a.GaussianBlur(blur_limit=(3, 3), p=config.blur),
            a.GaussNoise(std_range=config.noise_std, p=config.noise),
            a.Downscale(scale_range=config.downscale_range, p=config.downscale),
            a.ImageCompression(quality_range=config.jpeg_quality, p=config.jpeg),
            a.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(0.04, 0.1),
                hole_width_range=(0.04, 0.1),
                fill=config.fill,
                p=config.coarse_dropout,
            ),
        ],
        seed=seed,
    )


def augment(pipeline, image: np.ndarray, mask: np.ndarray | None = None):
    """Apply ``pipeline`` to a float32 [0, 1] image; CLAHE needs uint8, so go through it.

    With a ``mask`` (uint8, same shape) the geometric transforms move it with the image and
    (image, mask) is returned.
    """
    if pipeline is None:
        return image if mask is None else (image, mask)
    as_bytes = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    if mask is None:
        return pipeline(image=as_bytes)["image"].astype(np.float32) / 255.0
    result = pipeline(image=as_bytes, mask=mask)
    return result["image"].astype(np.float32) / 255.0, result["mask"]
