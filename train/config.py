"""Typed training configuration: dataclass defaults, then a YAML file, then CLI overrides.

The resolved config is saved next to every checkpoint as ``config.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_app._optional import require
from edge_app.errors import UsageError


@dataclass
class TrainConfig:
    name: str | None = None  # the run's name (in a plan); default: the out folder's name
    cache: str = "cache/fracatlas-256"
    out: str = "runs/train"
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str | None = None  # None (scratch) | "imagenet" (online) | "offline"
    init_weights: str | None = None
    init_sha256: str | None = None
    input_size: int = 224
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "onecycle"  # "onecycle" | "cosine"
    warmup_fraction: float = 0.1
    imbalance: str = "bce_pos_weight"  # see train.losses.IMBALANCE_METHODS
    region_head: bool = False
    region_weight: float = 0.2
    type_head: bool = False  # multi-class fracture type, for folder-per-class type data sets
    type_weight: float = 0.2
    ema: bool = False
    ema_decay: float = 0.998
    patience: int = 8
    drop_rate: float = 0.2
    augment_policy: str = "default"  # train.augment.POLICIES: "default" (mild) | "strong"
    linear_probe_init: bool = False  # LP-FT: fit the head on frozen features, then fine-tune
    feature_taps: list[str] | None = None  # e.g. [block4, head]: pooled stages side by side
    probe_l2: float | None = None  # the LP step's strength (None: best validation AUROC)
    probe_features: str | None = None  # LP from a feature bank (train.feature_bank), not passes
    layer_decay: float | None = None  # learning rate × decay^(depth from the top) per timm block
    freeze_stages: int = 0  # keep the stem and the first stages at their pretrained weights
    cam_weight: float = 0.0  # outline supervision of the CAM on fractured films
    cam_negative_weight: float = 0.0  # no CAM cell arguing for a fracture on the other films
    cam_temperature: float = 1.0
    seed: int = 0
    augment: str = (
        "auto"  # "auto" (device on CUDA, albumentations on CPU) | "device" | "albumentations"
    )
    device: str = "auto"
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "bf16" | "fp32"
    channels_last: bool | None = None  # None: on CUDA only
    threads: int | None = None  # torch threads on the CPU (None: torch's default)
    deadline_minutes: float | None = None  # stop training after this long; the best is kept
    weights_dtype: str = "float32"  # "float16" halves the checkpoint (e.g. back from a GPU)
    limit: int | None = None
    resume: bool = False
    overwrite: bool = False  # replace a finished checkpoint already in ``out``
    progress: bool = True
    tensorboard: bool = True
    # Distillation (fracture-edge distill)
    teachers: list[str] = field(default_factory=list)  # checkpoint folders, run online
    teacher_logits: str | None = None  # "file.csv:column", fixed logits per image
    temperature: float = 2.0
    alpha: float = 0.7
    attention_weight: float = 0.0

    def __post_init__(self) -> None:
        choices = {
            "precision": ("auto", "bf16", "fp32"),
            "weights_dtype": ("float32", "float16"),
            "augment": ("auto", "device", "albumentations"),
            "schedule": ("onecycle", "cosine"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise UsageError(
                    f"{key} must be one of {', '.join(valid)}; got {getattr(self, key)!r}"
                )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise UsageError(f"layer_decay must lie in (0, 1], got {self.layer_decay}")
        if self.freeze_stages < 0 or self.cam_weight < 0 or self.cam_negative_weight < 0:
            raise UsageError("freeze_stages, cam_weight and cam_negative_weight must be ≥ 0")
        if self.feature_taps and self.input_size % 32:
            raise UsageError(
                f"feature_taps need an input size divisible by 32 (each coarser map must tile "
                f"the finest one exactly); got {self.input_size}"
            )
        if self.deadline_minutes is not None and not self.deadline_minutes > 0:
            raise UsageError(f"deadline_minutes must be > 0, got {self.deadline_minutes}")

    @property
    def cam_supervision(self) -> bool:
        return self.cam_weight > 0 or self.cam_negative_weight > 0

    @property
    def distill(self) -> bool:
        return bool(self.teachers or self.teacher_logits)

    @property
    def run_name(self) -> str:
        return self.name or Path(self.out).name


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
):
    """Defaults ← ``base`` ← YAML file ← overrides (None values in overrides are ignored).

    ``base`` is for verbs that start from another run's recipe (``fracture-edge prune``).
    """
    values: dict[str, Any] = dict(base or {})
    if path:
        yaml = require("yaml", "read training configs")
        values.update(yaml.safe_load(Path(path).read_text()) or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(values) - set(config_keys())
    if unknown:
        raise UsageError(
            f"Unknown config keys {sorted(unknown)}; valid: {', '.join(config_keys())}"
        )
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    yaml = require("yaml", "write training configs")
    path = Path(path)
    path.write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    return path
