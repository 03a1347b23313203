"""Parameter groups for fine-tuning a pretrained backbone: layer-wise learning-rate decay and
frozen early stages.

Both follow timm's own grouping of each backbone (``group_matcher``): the fine groups (timm's
blocks) get ``lr · layer_decay^(depth from the top)``, the heads the full rate; the first
``freeze_stages`` coarse groups (the stem counts as one) keep their ImageNet weights and their
BatchNorm statistics. A backbone without ``group_matcher`` (the custom CNN) is one group.
"""

from __future__ import annotations

from typing import Any

from edge_app._optional import require

torch = require("torch", "train models")


def _groups(backbone, coarse: bool) -> list[list[str]]:
    if not hasattr(backbone, "group_matcher"):
        return [[name for name, _ in backbone.named_parameters()]]
    from timm.models._manipulate import group_parameters

    grouped = group_parameters(backbone, backbone.group_matcher(coarse=coarse))
    return [grouped[key] for key in sorted(grouped)]


def frozen_modules(model, freeze_stages: int) -> list:
    """Freeze the first ``freeze_stages`` coarse groups of ``model.backbone``; return the
    modules to keep in eval mode (their BatchNorm statistics stay the pretrained ones)."""
    if freeze_stages <= 0:
        return []
    backbone = model.backbone
    names = {name for group in _groups(backbone, True)[:freeze_stages] for name in group}
    parameters = dict(backbone.named_parameters())
    for name in names:
        parameters[name].requires_grad_(False)
    prefixes = {name.rsplit(".", 1)[0] for name in names}
    return [module for name, module in backbone.named_modules() if name in prefixes]


def parameter_groups(model, lr: float, layer_decay: float | None) -> list[dict[str, Any]]:
    """Optimizer groups: backbone groups with decayed rates, then the heads at ``lr``."""
    backbone = model.backbone
    parameters = dict(backbone.named_parameters())
    groups = _groups(backbone, coarse=False)
    result = []
    for depth, names in enumerate(groups):
        trainable = [parameters[name] for name in names if parameters[name].requires_grad]
        if trainable:
            scale = layer_decay ** (len(groups) - depth) if layer_decay else 1.0
            result.append({"params": trainable, "lr": lr * scale})
    heads = [
        p
        for name, p in model.named_parameters()
        if not name.startswith("backbone.") and p.requires_grad
    ]
    result.append({"params": heads, "lr": lr})
    return result
