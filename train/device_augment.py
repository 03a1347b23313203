"""The augmentation policy of :mod:`train.augment`, batched on tensors on the training device.

The policy is defined once, by :class:`train.augment.AugmentConfig`, which also builds the
albumentations pipeline (the reference implementation, one image at a time). This module reads
the same fields and applies them to a whole batch with a few tensor operations, so that a GPU
(or the CPU, where per-image Python costs more than the convolutions of a small model) never waits
for the input pipeline. Randomness comes from the ``generator`` passed in, never global state.

Mirrored, with the albumentations probabilities: affine (rotation, scale, shift; p 0.8),
horizontal flip, quarter turns, brightness/contrast (p 0.5), gamma (p 0.3), a 3×3 Gaussian blur,
Gaussian noise, down-and-up resampling, coarse dropout (1–4 holes). CLAHE and JPEG compression
are the transforms only the albumentations path applies. Fracture masks (for the CAM
supervision) follow every geometric transform.
"""

from __future__ import annotations

import math

from edge_app._optional import require
from train.augment import AugmentConfig

torch = require("torch", "augment on the device")
F = torch.nn.functional

DEFAULT_POLICY = AugmentConfig()


def _uniform(count, low, high, generator, device):
    return torch.rand(count, device=device, generator=generator) * (high - low) + low


def _chance(count, probability, generator, device):
    return torch.rand(count, device=device, generator=generator) < probability


def augment_batch(images, generator, policy: AugmentConfig = DEFAULT_POLICY, masks=None):
    """Float canvases (n, 1, s, s) in [0, 1] → augmented canvases of the same shape.

    With ``masks`` (n, 1, s, s, float) returns (images, masks), the masks moved with the images.
    """
    stacked = images if masks is None else torch.cat([images, masks], 1)
    stacked = _quarter_turns(_affine(stacked, generator, policy), generator, policy)
    images, masks = stacked[:, :1], (None if masks is None else stacked[:, 1:])
    images = _photometric(images, generator, policy)
    images = _downscale(images, generator, policy)
    images = coarse_dropout(images, generator, policy)
    return images if masks is None else (images, masks)


def _quarter_turns(images, generator, policy: AugmentConfig):
    if policy.rotate90 <= 0:
        return images
    count, device = images.shape[0], images.device
    turns = torch.randint(1, 4, (count,), device=device, generator=generator)
    turns = torch.where(_chance(count, policy.rotate90, generator, device), turns, 0)
    result = images.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            result[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return result


def _downscale(images, generator, policy: AugmentConfig):
    """Down to a random share of the size and back up, on a ``policy.downscale`` share."""
    if policy.downscale <= 0:
        return images
    count, size = images.shape[0], images.shape[-1]
    chosen = _chance(count, policy.downscale, generator, images.device)
    if not chosen.any():
        return images
    low, high = policy.downscale_range
    factor = float(torch.rand((), generator=generator, device=images.device)) * (high - low) + low
    small = max(8, round(size * factor))
    result = images.clone()
    shrunk = F.interpolate(images[chosen], size=(small, small), mode="area")
    result[chosen] = F.interpolate(shrunk, size=(size, size), mode="bilinear", align_corners=False)
    return result


def invert_films(images, content, generator, probability: float, fill: float = 0.0):
    """Invert the film's pixels (not the letterbox) on a ``probability`` share of the images;
    ``content`` (n, 1, s, s) marks each canvas's film region."""
    if probability <= 0:
        return images
    chosen = _chance(images.shape[0], probability, generator, images.device).view(-1, 1, 1, 1)
    inverted = torch.where(content, 1.0 - images, torch.full_like(images, fill))
    return torch.where(chosen, inverted, images)


def _affine(images, generator, policy: AugmentConfig):
    count, device = images.shape[0], images.device
    apply = _chance(count, 0.8, generator, device)
    angle = _uniform(count, -policy.rotate_degrees, policy.rotate_degrees, generator, device)
    angle = torch.where(apply, angle, torch.zeros_like(angle)) * math.pi / 180
    scale = _uniform(count, 1 - policy.scale, 1 + policy.scale, generator, device)
    scale = torch.where(apply, scale, torch.ones_like(scale))
    # grid units span 2, so a shift of ±s of the image is ±2s in the grid
    shift_x = _uniform(count, -2 * policy.shift, 2 * policy.shift, generator, device) * apply
    shift_y = _uniform(count, -2 * policy.shift, 2 * policy.shift, generator, device) * apply
    flip = torch.where(_chance(count, policy.horizontal_flip, generator, device), -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Outside the canvas: the letterbox fill for the image, nothing for a mask channel.
    offset = torch.zeros(1, images.shape[1], 1, 1, device=device, dtype=images.dtype)
    offset[:, 0] = policy.fill
    moved = F.grid_sample(
        images - offset, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return moved + offset


def _photometric(images, generator, policy: AugmentConfig):
    count, device = images.shape[0], images.device

    def per_image(values):
        return values.view(-1, 1, 1, 1)

    adjust = per_image(_chance(count, 0.5, generator, device).float())
    brightness = per_image(
        _uniform(count, -policy.brightness, policy.brightness, generator, device)
    )
    contrast = per_image(
        _uniform(count, 1 - policy.contrast, 1 + policy.contrast, generator, device)
    )
    mean = images.mean((2, 3), keepdim=True)
    adjusted = ((images - mean) * contrast + mean + brightness).clamp(0, 1)
    images = adjust * adjusted + (1 - adjust) * images
    low, high = policy.gamma[0] / 100, policy.gamma[1] / 100
    gamma = per_image(_uniform(count, low, high, generator, device))
    use_gamma = per_image(_chance(count, 0.3, generator, device).float())
    images = images.clamp(0, 1) ** (use_gamma * gamma + (1 - use_gamma))
    if policy.blur > 0:
        kernel = torch.tensor([0.25, 0.5, 0.25], device=device, dtype=images.dtype)
        kernel = (kernel[:, None] * kernel[None, :]).view(1, 1, 3, 3)
        blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel)
        use_blur = per_image(_chance(count, policy.blur, generator, device).float())
        images = use_blur * blurred + (1 - use_blur) * images
    noisy = per_image(_chance(count, policy.noise, generator, device).float())
    sigma = per_image(_uniform(count, *policy.noise_std, generator, device))
    noise = torch.randn(images.shape, device=device, generator=generator) * sigma
    return (images + noisy * noise).clamp(0, 1)


def coarse_dropout(images, generator, policy: AugmentConfig = DEFAULT_POLICY):
    """Blank 1–4 rectangles of 4–10 % per side in a ``policy.coarse_dropout`` share of images."""
    count, _, height, width = images.shape
    device = images.device
    apply = _chance(count, policy.coarse_dropout, generator, device)
    holes = torch.randint(1, 5, (count,), device=device, generator=generator)
    ys = torch.linspace(0, 1, height, device=device).view(1, height, 1)
    xs = torch.linspace(0, 1, width, device=device).view(1, 1, width)
    blank = torch.zeros(count, height, width, dtype=torch.bool, device=device)
    for hole in range(4):
        size = torch.rand(count, 2, device=device, generator=generator) * 0.06 + 0.04
        centre = torch.rand(count, 2, device=device, generator=generator)
        inside = ((ys - centre[:, 0].view(-1, 1, 1)).abs() < size[:, 0].view(-1, 1, 1) / 2) & (
            (xs - centre[:, 1].view(-1, 1, 1)).abs() < size[:, 1].view(-1, 1, 1) / 2
        )
        blank |= inside & (apply & (holes > hole)).view(-1, 1, 1)
    return images.masked_fill(blank.unsqueeze(1), policy.fill)
