"""Structured channel pruning (torch-pruning), then a short distillation fine-tune.

:func:`prune_model` removes the same fraction of output channels from every prunable convolution
(uniform per layer, not one global ranking), keeping the channels with the largest L2 norm
(``"l2"``) or BatchNorm scale (``"bn_scale"``, network slimming). torch-pruning's dependency
graph removes coupled channels together: a depthwise conv with the pointwise conv feeding it,
every conv feeding one residual sum, and the matching input features of the heads. The fracture
and auxiliary heads keep their outputs, so the model keeps its contract: one logit per image, a
feature map from ``features``, and a CAM that is the head's weights applied to that map. Only the
number of feature channels shrinks.

A pruned model carries its card section in ``model.pruning``; the Trainer writes it into the
model card and :func:`train.checkpoints.load_checkpoint` rebuilds the pruned shapes from it and
the saved tensors.

    fracture-edge prune runs/lite0 --ratio 0.3 --epochs 5 --out runs/lite0_p30
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edge_app._optional import require
from edge_app.errors import FractureEdgeError, UsageError
from edge_app.preprocess import PreprocessConfig
from train.checkpoints import load_checkpoint
from train.config import TrainConfig, config_keys
from train.models import FractureNet
from train.trainer import Trainer

torch = require("torch", "prune models")
nn = torch.nn

logger = logging.getLogger(__name__)

IMPORTANCES = ("l2", "bn_scale")
MAX_RATIO = 0.9
FINE_TUNE_EPOCHS = 5
# Fields of the source checkpoint's recipe that a fine-tune does not inherit: where it writes,
# how long it runs, what it starts from and learns from, and this machine's settings.
_NOT_INHERITED = {
    "out",
    "epochs",
    "resume",
    "init_weights",
    "init_sha256",
    "teachers",
    "teacher_logits",
    "limit",
    "device",
    "progress",
    "tensorboard",
}


class PruningError(FractureEdgeError):
    """Pruning broke the model's contract (one logit, features matching the heads)."""


@dataclass(frozen=True)
class PruneReport:
    """Parameters and multiply-accumulates of one image, before and after pruning."""

    input_size: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @classmethod
    def measure(cls, before: FractureNet, after: FractureNet, input_size: int) -> PruneReport:
        params_before, macs_before = count_params_and_macs(before, input_size)
        params_after, macs_after = count_params_and_macs(after, input_size)
        return cls(input_size, params_before, params_after, macs_before, macs_after)

    def lines(self) -> list[str]:
        def row(name: str, before: int, after: int) -> str:
            change = 100 * (after - before) / max(before, 1)
            return f"{name}: {before:,} → {after:,} ({change:+.1f}%)"

        return [
            row("parameters", self.params_before, self.params_after),
            row(f"MACs at {self.input_size} px", self.macs_before, self.macs_after),
        ]


def _torch_pruning():
    return require("torch_pruning", "prune channels")


def _example_input(model: nn.Module, input_size: int):
    stem = next(m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    device = stem.weight.device
    return torch.zeros(1, stem.in_channels, input_size, input_size, device=device)


def count_params_and_macs(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one ``input_size``² image)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = _torch_pruning().utils.count_ops_and_params(
            model, _example_input(model, input_size)
        )
    model.train(was_training)
    return int(params), int(macs)


def check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= MAX_RATIO:
        raise UsageError(
            f"The pruning ratio is the fraction of channels removed from every layer and must be "
            f"in [0, {MAX_RATIO}], got {ratio}. Try 0.3 to 0.5."
        )


def _importance(name: str):
    tp = _torch_pruning()
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise UsageError(f"Unknown importance {name!r}; valid: {', '.join(IMPORTANCES)}")


def _output_channels(model: nn.Module) -> dict[str, int]:
    return {
        name: module.out_channels
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.conv._ConvNd)
    }


def prune_model(
    model: FractureNet,
    ratio: float,
    input_size: int,
    importance: str = "l2",
    round_to: int = 8,
) -> FractureNet:
    """A pruned copy of ``model`` with ``model.pruning`` set (the model card's section).

    ``ratio`` 0 returns ``model`` itself. ``round_to`` keeps channel counts multiples of it
    (fast kernels on phones); 1 disables rounding.
    """
    check_ratio(ratio)
    scorer = _importance(importance)
    if round_to < 1:
        raise UsageError(f"round_to must be a positive channel multiple, got {round_to}")
    if ratio == 0:
        return model
    pruned = copy.deepcopy(model).requires_grad_(True)  # tracing follows the autograd graph
    was_training = model.training
    channels_before = _output_channels(pruned)
    example = _example_input(pruned, input_size)
    with torch.enable_grad():
        pruner = _torch_pruning().pruner.BasePruner(
            pruned,
            example,
            importance=scorer,
            pruning_ratio=ratio,
            ignored_layers=[pruned.fracture_head, *pruned.aux_heads.values()],
            round_to=round_to if round_to > 1 else None,
            # forward_all, so that the auxiliary heads' inputs shrink with the features
            forward_fn=lambda module, inputs: module.forward_all(inputs),
        )
        pruner.step()
    pruned.num_features = pruned.fracture_head.in_features
    _check_contract(pruned, model, example)
    previous = getattr(model, "pruning", None) or {}
    changed = {
        name: count
        for name, count in _output_channels(pruned).items()
        if count != channels_before[name]
    }
    pruned.pruning = {
        "ratio": ratio,
        "importance": importance,
        "round_to": round_to,
        # relative to the base architecture, over every pruning pass
        "channels": {**previous.get("channels", {}), **changed},
    }
    if previous:
        earlier = {k: v for k, v in previous.items() if k not in ("channels", "previous")}
        pruned.pruning["previous"] = [*previous.get("previous", []), earlier]
    return pruned.train(was_training)


def _check_contract(pruned: FractureNet, original: FractureNet, example) -> None:
    """Features as wide as every head's input; each head's outputs as before pruning."""
    pruned.eval()
    heads = {"fracture": pruned.fracture_head, **pruned.aux_heads}
    with torch.no_grad():
        features = pruned.features(example)
        widths = {name: head.in_features for name, head in heads.items()}
        shapes = {}
        if set(widths.values()) == {features.shape[1]}:
            pooled = features.mean((2, 3))
            shapes = {name: tuple(head(pooled).shape) for name, head in heads.items()}
    expected = {"fracture": (1, 1)}
    expected.update({name: (1, head.out_features) for name, head in original.aux_heads.items()})
    if shapes != expected:
        raise PruningError(
            f"Pruning left {features.shape[1]} feature channels for heads reading {widths} "
            f"(outputs {shapes}, expected {expected}): this backbone has a layer torch-pruning "
            "does not couple to the heads. Report the backbone."
        )


# --------------------------------------------------------------------------- checkpoints


def fine_tune_base(card: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig values a fine-tune of a checkpoint starts from (flags and --config override).

    The checkpoint's own recipe (learning rate, loss, augmentation, normalisation...), for
    :data:`FINE_TUNE_EPOCHS` epochs, with the checkpoint's architecture, input size and heads.
    """
    recipe = card.get("config") or {}
    aux = card.get("aux_heads") or {}
    return {
        **{k: v for k, v in recipe.items() if k in config_keys() and k not in _NOT_INHERITED},
        "epochs": FINE_TUNE_EPOCHS,
        "backbone": card["architecture"],
        "input_size": int(card["preprocessing"]["input_size"]),
        "region_head": "region" in aux,
        "type_head": "fracture_type" in aux,
    }


def fine_tune(
    model: FractureNet, config: TrainConfig, preprocessing: PreprocessConfig
) -> dict[str, Any]:
    """Fine-tune ``model`` with the Trainer (distilling when ``config`` names teachers).

    ``preprocessing`` is the one ``model`` was trained with (its card's), at ``config``'s input
    size. ``config.epochs`` 0 trains nothing but still evaluates on the cache and writes a
    complete checkpoint, so the card's operating points belong to the pruned model.
    """
    preprocessing = replace(preprocessing, input_size=config.input_size)
    trainer = Trainer(config, model=model, preprocessing=preprocessing)
    if config.epochs > 0:
        return trainer.fit()
    return trainer.write_without_training("not trained (epochs 0)")


def prune_checkpoint(
    checkpoint: str | Path,
    config: TrainConfig,
    ratio: float,
    importance: str = "l2",
    round_to: int = 8,
) -> tuple[dict[str, Any], PruneReport]:
    """Prune a checkpoint, fine-tune it into ``config.out``; (new card, report).

    Without ``--teachers`` or ``--teacher-logits`` the unpruned checkpoint is the teacher.
    """
    check_ratio(ratio)
    if config.init_weights:
        raise UsageError(f"prune starts from {checkpoint}'s weights; drop --init-weights")
    model, card, preprocessing = load_checkpoint(checkpoint)
    if config.backbone != card["architecture"]:
        raise UsageError(
            f"{checkpoint} is a {card['architecture']}; drop --backbone {config.backbone}"
        )
    pruned = prune_model(model, ratio, config.input_size, importance, round_to)
    report = PruneReport.measure(model, pruned, config.input_size)
    if ratio > 0:
        pruned.pruning["report"] = asdict(report)
    if config.epochs > 0 and not config.distill:
        logger.info("distilling from the unpruned checkpoint %s", checkpoint)
        config = replace(config, teachers=[str(checkpoint)])
    return fine_tune(pruned, config, preprocessing), report


def recalibrate_batchnorm(model: nn.Module, images, batch_size: int = 32) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images`` (N, 1, H, W), in place.

    Pruning removes channels and a new input size changes activation statistics, so the
    stored means and variances no longer fit. A forward pass over a few hundred un-augmented
    training images with cumulative averaging (``momentum=None``) fixes them without a gradient
    step; only the BatchNorm layers are put in training mode. Measured on FracAtlas validation
    (``benchmarks/batchnorm_recalibration.py``, docs/compress.md): Lite0 pruned 10 % at 192 px,
    AUROC 0.762 → 0.866; at its trained size it does not help (0.900 → 0.891).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    saved = [(m, m.momentum) for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model.features(images[start : start + batch_size])
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.eval()
    return model
