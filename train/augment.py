"""Training-only augmentation with albumentations, seeded by its own random state.

The policy is deliberately mild: radiographs are acquired in a narrow range of geometry and
exposure, and fracture lines are thin, so heavy blur or large rotations erase the signal. Evaluation
never augments: :func:`build_augmentation` returns ``None`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_app._optional import require


@dataclass(frozen=True)
class AugmentConfig:
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
    coarse_dropout: float = 0.2
    fill: float = 0.0


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
            a.RandomBrightnessContrast(config.brightness, config.contrast, p=0.5),
            a.RandomGamma(gamma_limit=config.gamma, p=0.3),
            a.CLAHE(clip_limit=2.0, tile_grid_size=(8, 8), p=config.clahe),
            a.GaussianBlur(blur_limit=(3, 3), p=config.blur),
            a.GaussNoise(std_range=(0.01, 0.03), p=config.noise),
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


def augment(pipeline, image: np.ndarray) -> np.ndarray:
    """Apply ``pipeline`` to a float32 [0, 1] image; CLAHE needs uint8, so go through it."""
    if pipeline is None:
        return image
    as_bytes = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    result = pipeline(image=as_bytes)["image"]
    return result.astype(np.float32) / 255.0
