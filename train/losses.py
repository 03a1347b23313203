"""Losses for a single fracture logit: class-imbalance handling and distillation."""

from __future__ import annotations

from edge_app._optional import require

torch = require("torch", "train models")
F = torch.nn.functional

IMBALANCE_METHODS = ("bce_pos_weight", "focal", "balanced_sampler", "bce")


def focal_loss(logits, targets, gamma: float = 2.0, alpha: float = 0.75):
    """Binary focal loss (Lin et al., 2017); ``alpha`` weighs the positive class."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probability * targets + (1 - probability) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * cross_entropy).mean()


def supervised_loss(method: str, logits, targets, pos_weight=None):
    """The hard-label loss for an imbalance ``method`` (the sampler balances, so plain BCE)."""
    if method == "focal":
        return focal_loss(logits, targets)
    if method == "bce_pos_weight":
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    if method in ("balanced_sampler", "bce"):
        return F.binary_cross_entropy_with_logits(logits, targets)
    raise ValueError(f"Unknown imbalance method {method!r}; valid: {', '.join(IMBALANCE_METHODS)}")


def distillation_loss(student_logits, teacher_logits, hard_loss, temperature: float, alpha: float):
    """Hinton KD for one sigmoid output: ``α·T²·BCE(σ(s/T), σ(t/T)) + (1−α)·hard``.

    The T² factor keeps the soft term's gradient scale independent of the temperature.
    """
    soft_targets = torch.sigmoid(teacher_logits / temperature)
    soft = F.binary_cross_entropy_with_logits(student_logits / temperature, soft_targets)
    return alpha * temperature**2 * soft + (1 - alpha) * hard_loss


def attention_transfer_loss(student_cam, teacher_cam):
    """Mean squared difference of the two class-activation maps, each ReLU'd and L2-normalised.

    Matching the student's CAM to the teacher's (for a GAP+linear teacher its CAM equals its
    Grad-CAM up to a positive scale) makes the phone's heatmap agree with the teacher's.
    """
    if student_cam.shape[-2:] != teacher_cam.shape[-2:]:
        teacher_cam = F.interpolate(
            teacher_cam.unsqueeze(1),
            size=student_cam.shape[-2:],
            mode="bilinear",
            align_corners=False,
        ).squeeze(1)

    def normalise(cam):
        flat = torch.relu(cam).flatten(1)
        return flat / (flat.norm(dim=1, keepdim=True) + 1e-6)

    return (normalise(student_cam) - normalise(teacher_cam)).pow(2).sum(1).mean()


def outline_cam_loss(cam, masks, targets, bias, temperature: float = 1.0):
    """Supervise the head-weighted CAM with the fracture outlines; (positive term, negative term).

    ``cam`` (b, h, w) is the map whose mean plus ``bias`` is the logit; ``masks`` (b, h, w) holds
    each cell's share inside an outline. On fractured films with an outline the CAM's softmax
    mass should lie inside it: ``-log Σ softmax(cam / T) · mask``. On films without a fracture
    no cell should argue for one: ``softplus(max cam + bias)``, the BCE of the peak cell's logit
    against "no fracture". Films without outlines give no positive term.
    """
    flat_cam = cam.flatten(1).float()
    flat_mask = masks.flatten(1).float()
    zero = flat_cam.new_zeros(())
    outlined = (targets > 0.5) & (flat_mask.sum(1) > 0)
    positive = zero
    if outlined.any():
        weights = torch.softmax(flat_cam[outlined] / temperature, dim=1)
        inside = (weights * flat_mask[outlined]).sum(1)
        positive = -torch.log(inside.clamp_min(1e-6)).mean()
    negatives = targets < 0.5
    negative = zero
    if negatives.any():
        negative = F.softplus(flat_cam[negatives].amax(1) + bias).mean()
    return positive, negative
