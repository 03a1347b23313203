"""Augmentation with tensors on the training device (the GPU path keeps data and augmentation
there, so a teacher trains in about a minute inside a short lease).

It mirrors :mod:`train.augment`'s albumentations policy: ±10° rotation, ±10 % scale, ±6 % shift,
horizontal flip, brightness/contrast ±15 %, gamma 0.85–1.18, light noise and coarse dropout.
Randomness comes from the ``generator`` passed in, never from global state.
"""

from __future__ import annotations

import math

from edge_app._optional import require

torch = require("torch", "augment on the device")
F = torch.nn.functional


def _uniform(count, low, high, generator, device):
    return torch.rand(count, device=device, generator=generator) * (high - low) + low


def augment_batch(batch, size: int, generator, fill: float = 0.0):
    """uint8 canvases (n, 1, s, s) → augmented float images (n, 1, size, size) in [0, 1]."""
    count, device = batch.shape[0], batch.device
    angle = _uniform(count, -10, 10, generator, device) * math.pi / 180
    scale = _uniform(count, 0.9, 1.1, generator, device)
    flip = torch.where(torch.rand(count, device=device, generator=generator) < 0.5, -1.0, 1.0)
    shift_x = _uniform(count, -0.12, 0.12, generator, device)  # grid units span 2: ±6 %
    shift_y = _uniform(count, -0.12, 0.12, generator, device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, (count, 1, size, size), align_corners=False)
    images = batch.float() / 255.0
    images = (
        F.grid_sample(
            images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        + fill
    )
    images = _photometric(images, generator)
    return coarse_dropout(images, generator, fill=fill)


def _photometric(images, generator):
    count, device = images.shape[0], images.device
    brightness = _uniform(count, -0.15, 0.15, generator, device).view(-1, 1, 1, 1)
    contrast = _uniform(count, 0.85, 1.15, generator, device).view(-1, 1, 1, 1)
    gamma = _uniform(count, 0.85, 1.18, generator, device).view(-1, 1, 1, 1)
    mean = images.mean((2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean + brightness).clamp(0, 1) ** gamma
    noisy = (torch.rand(count, 1, 1, 1, device=device, generator=generator) < 0.15).float()
    noise = torch.randn(images.shape, device=device, generator=generator) * 0.02
    return (images + noisy * noise).clamp(0, 1)


def coarse_dropout(images, generator, probability: float = 0.2, fill: float = 0.0):
    """Blank one rectangle of 4–10 % per side in a ``probability`` share of the images."""
    count, _, height, width = images.shape
    device = images.device
    apply = torch.rand(count, device=device, generator=generator) < probability
    hole = torch.rand(count, 2, device=device, generator=generator) * 0.06 + 0.04
    centre = torch.rand(count, 2, device=device, generator=generator)
    ys = torch.linspace(0, 1, height, device=device).view(1, height, 1)
    xs = torch.linspace(0, 1, width, device=device).view(1, 1, width)
    inside = ((ys - centre[:, 0].view(-1, 1, 1)).abs() < hole[:, 0].view(-1, 1, 1) / 2) & (
        (xs - centre[:, 1].view(-1, 1, 1)).abs() < hole[:, 1].view(-1, 1, 1) / 2
    )
    return images.masked_fill((inside & apply.view(-1, 1, 1)).unsqueeze(1), fill)


def resize_batch(batch, size: int):
    """uint8 canvases → float [0, 1] at ``size``² without augmentation (evaluation)."""
    images = batch.float() / 255.0
    if images.shape[-1] != size:
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return images
