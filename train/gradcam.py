"""Grad-CAM explanations of the fracture logit, and the metrics that judge them.

``explainer(model, method)`` is a context manager: the pytorch-grad-cam object (and with it the
hooks on the target layer) exists only inside the ``with`` block, so a long-running server cannot
leak hooks::

    with explainer(model, "gradcam") as explain_batch:
        heatmaps = explain_batch(images, sign=+1)     # (batch, H, W) in [0, 1]

``explain(model, images)`` does the same for one batch.

Why the teacher's Grad-CAM equals the student's in-graph CAM
-------------------------------------------------------------
A :class:`~train.models.FractureNet` computes ``y = b + sum_c w_c * mean_ij A[c, i, j]`` from
the feature map ``A`` (C × h × w) that ``forward_features`` returns. Hence
``dy / dA[c, i, j] = w_c / (h * w)`` at every position, Grad-CAM's channel weight (the spatial
mean of that gradient) is ``w_c / (h * w)``, and the Grad-CAM map is
``ReLU(sum_c w_c A[c]) / (h * w) = ReLU(model.class_activation_map(x)) / (h * w)``. Min-max
normalisation removes the positive factor, so normalised Grad-CAM and normalised ReLU(CAM) are
the same map (HiResCAM too: ``sum_c dy/dA[c] * A[c]`` is the same sum). For ``sign=-1`` the map
is ``ReLU(-CAM)``. The identity needs the target layer to output exactly the pooled tensor, which
is why :func:`target_layer` picks the module producing ``forward_features``' output, e.g. VGG's
final max-pool rather than the ReLU before it (that ReLU gives 2× finer maps, but max-pooling
routes the gradient to one position per window, so its maps differ from the in-graph CAM).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from edge_app._optional import require
from edge_app.errors import FractureEdgeError
from train.models import CustomCNN, FractureNet

torch = require("torch", "explain models")
nn = torch.nn
timm = require("timm", "explain models")
grad_cam = require("pytorch_grad_cam", "explain predictions with Grad-CAM")

logger = logging.getLogger(__name__)

METHODS = {
    "gradcam": grad_cam.GradCAM,
    "gradcam++": grad_cam.GradCAMPlusPlus,
    "hirescam": grad_cam.HiResCAM,
    "eigencam": grad_cam.EigenCAM,
}
# Methods whose map does not depend on the target (EigenCAM projects the activations only).
CLASS_AGNOSTIC_METHODS = frozenset({"eigencam"})

# The module whose output is the map forward_features returns, per backbone family.
_FEATURE_LAYER_OF_FAMILY = (
    (CustomCNN, lambda backbone: backbone.features[-1]),  # the last max-pool
    (timm.models.resnet.ResNet, lambda backbone: backbone.layer4[-1]),
    # EfficientNet-Lite and MobileNetV2: conv_head → bn2 (BatchNormAct2d, activation included).
    (timm.models.efficientnet.EfficientNet, lambda backbone: backbone.bn2),
    # MobileNetV3 applies its conv_head after pooling, in forward_head.
    (timm.models.mobilenetv3.MobileNetV3, lambda backbone: backbone.blocks[-1]),
    (timm.models.vgg.VGG, lambda backbone: backbone.features[-1]),  # the last max-pool
)


class UnsupportedBackboneError(FractureEdgeError, ValueError):
    """No target layer is known for this backbone family."""


def target_layer(model: FractureNet) -> nn.Module:
    """The module producing the feature map that ``model.features(x)`` returns."""
    backbone = getattr(model, "backbone", None)
    for family, layer_of in _FEATURE_LAYER_OF_FAMILY:
        if isinstance(backbone, family):
            return layer_of(backbone)
    known = ", ".join(family.__name__ for family, _ in _FEATURE_LAYER_OF_FAMILY)
    raise UnsupportedBackboneError(
        f"No Grad-CAM target layer is known for a backbone of type {type(backbone).__name__}; "
        f"known families: {known}. Pass target_layers=[module] with the module whose output "
        "forward_features returns."
    )


class BinaryFractureTarget:
    """Callable target for a single-logit head: ``sign`` × one image's fracture logit.

    ``sign=+1`` explains "fracture", ``sign=-1`` explains "no fracture" (as pytorch-grad-cam's
    ``BinaryClassifierOutputTarget(1)`` and ``(0)``). pytorch-grad-cam hands each target one row
    of the model output; FractureNet's output is (batch,), so the row is a 0-d logit, and a
    (batch, 1) output's row of shape (1,) works as well. No wrapper module is needed.
    """

    def __init__(self, sign: int = 1) -> None:
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 (fracture) or -1 (no fracture), got {sign!r}")
        self.sign = sign

    def __call__(self, model_output):
        if model_output.numel() != 1:
            raise ValueError(
                f"BinaryFractureTarget expects one image's single fracture logit, got shape "
                f"{tuple(model_output.shape)}; for several classes use ClassifierOutputTarget"
            )
        return self.sign * model_output.reshape(())

    def __repr__(self) -> str:
        return f"BinaryFractureTarget(sign={self.sign:+d})"


def _validated_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(
            f"Unknown explanation method {method!r}; valid methods: {', '.join(METHODS)}"
        )
    return method


class Explainer:
    """Context manager around one pytorch-grad-cam method; see :func:`explainer`."""

    def __init__(
        self,
        model: nn.Module,
        method: str = "gradcam",
        target_layers: Sequence[nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.method = _validated_method(method)
        self.target_layers = (
            list(target_layers) if target_layers is not None else [target_layer(model)]
        )
        self._cam = None
        self._was_training = model.training
        self._saved_gradients: list = []

    def __enter__(self) -> Explainer:
        if self._cam is not None:
            raise RuntimeError("This explainer is already open; open a new one with explainer()")
        self._was_training = self.model.training
        # The backward pass of each explanation overwrites the parameters' .grad.
        self._saved_gradients = [parameter.grad for parameter in self.model.parameters()]
        # Constructing the CAM registers its hooks and switches the model to eval().
        self._cam = METHODS[self.method](self.model, self.target_layers)
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        cam, self._cam = self._cam, None
        # The exception is not forwarded: BaseCAM.__exit__ swallows an IndexError with a print.
        cam.__exit__(None, None, None)
        for parameter, gradient in zip(self.model.parameters(), self._saved_gradients, strict=True):
            parameter.grad = gradient
        self._saved_gradients = []
        self.model.train(self._was_training)
        return False

    def __call__(
        self, images, sign: int = 1, targets: Sequence[Callable] | None = None
    ) -> np.ndarray:
        """Heatmaps (batch, H, W), float32 in [0, 1], at the input's resolution.

        ``targets`` (one callable per image) overrides ``sign``. An all-zero heatmap means no
        position supports the target.
        """
        if self._cam is None:
            raise RuntimeError(
                "Call the explainer inside its with-block: "
                "with explainer(model) as explain_batch: ..."
            )
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.ndim != 4:
            raise ValueError(
                f"images must be (batch, channels, height, width), got shape {tuple(images.shape)}"
            )
        if targets is None:
            targets = [BinaryFractureTarget(sign)] * len(images)
            if self.method in CLASS_AGNOSTIC_METHODS and sign != 1:
                logger.warning(
                    "%s does not depend on the target; sign=%d is ignored", self.method, sign
                )
        elif len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images; give one each")
        with torch.enable_grad():  # callers often sit inside torch.no_grad()
            return self._cam(images, list(targets))


def explainer(
    model: nn.Module, method: str = "gradcam", target_layers: Sequence[nn.Module] | None = None
) -> Explainer:
    """A context manager explaining batches with ``method`` (one of :data:`METHODS`).

    Inside the block the model is in eval mode and carries the CAM's hooks; on exit the hooks are
    removed, and the model's training mode and parameter gradients are restored, even when the
    block raises. ``target_layers`` defaults to ``[target_layer(model)]``.
    """
    return Explainer(model, method, target_layers)


def explain(
    model: nn.Module,
    images,
    method: str = "gradcam",
    sign: int = 1,
    target_layers: Sequence[nn.Module] | None = None,
) -> np.ndarray:
    """Heatmaps (batch, H, W) in [0, 1] for one batch; opens and closes an :func:`explainer`."""
    with explainer(model, method, target_layers) as explain_batch:
        return explain_batch(images, sign=sign)
