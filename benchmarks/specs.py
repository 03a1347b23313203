"""What ``fracture-edge bench`` measures: artifact SPECs, parsed and expanded.

- ``tflite:BUNDLE_DIR``, ``torch:CHECKPOINT_DIR``, ``onnx:CHECKPOINT_DIR``: an artifact with
  weights;
- ``arch:NAME@SIZE`` and ``onnx:arch:NAME@SIZE``: an architecture with random weights
  (latency and size only);
- ``logits:CSV:COLUMN``: a GPU run's per-image logits (accuracy only);
- ``default``: the default list (:func:`default_spec_texts`).

:class:`BenchError` is every benchmark module's error for unusable input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_app.errors import FractureEdgeError

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("tflite", "torch", "onnx", "arch", "logits")
GPU_RUN = "models/checkpoints/gpu-2026-11-27"
DEFAULT_CHECKPOINTS = (
    "models/checkpoints/gpu-160-2026-11-27/student_tf_efficientnet_lite0_imagenet_160",
    f"{GPU_RUN}/student_tf_efficientnet_lite0_imagenet",
    f"{GPU_RUN}/student_tf_efficientnet_lite0_imagenet_kd",
    f"{GPU_RUN}/student_mobilenetv2_100_scratch",
    f"{GPU_RUN}/rerun/student_mobilenetv2_100_scratch_kd",
)
DEFAULT_ARCHITECTURES = (
    "arch:vgg16_bn@224",
    "onnx:arch:vgg16_bn@224",
    "arch:resnet50@224",
    "onnx:arch:resnet50@224",
    "arch:custom_cnn@224",
)
DEFAULT_LOGITS = f"{GPU_RUN}/logits.csv"
TEACHER_COLUMNS = (
    "teacher_tf_efficientnet_lite2_imagenet",
    "teacher_ensemble",
    "teacher_resnet50_scratch",
    "teacher_vgg16_bn_scratch",
)


class BenchError(FractureEdgeError):
    """A benchmark input (spec, split, data, labels CSV) is unusable, or a child run failed."""


@dataclass(frozen=True)
class ArtifactSpec:
    """One parsed SPEC. ``target`` is a folder or CSV path, or an architecture name."""

    text: str
    kind: str
    target: str
    input_size: int | None = None
    column: str | None = None
    random_weights: bool = False  # arch:NAME@SIZE and onnx:arch:NAME@SIZE: latency and size only


def parse_spec(text: str) -> ArtifactSpec:
    """Parse ``KIND:TARGET`` (see the module docstring); errors name the valid forms."""
    kind, separator, rest = text.partition(":")
    if not separator or kind not in KINDS or not rest:
        raise BenchError(
            f"artifact spec {text!r} is not understood; use one of tflite:BUNDLE_DIR, "
            "torch:CHECKPOINT_DIR, onnx:CHECKPOINT_DIR, arch:NAME@SIZE, onnx:arch:NAME@SIZE, "
            "logits:CSV:COLUMN or 'default'"
        )
    if kind == "arch":
        return _parse_arch(text, rest)
    if kind == "onnx" and rest.startswith("arch:"):
        return _parse_arch(text, rest.removeprefix("arch:"), "onnx")
    if kind == "logits":
        path, separator, column = rest.rpartition(":")
        if not separator or not path or not column:
            raise BenchError(f"logits spec {text!r} needs a column: logits:CSV:COLUMN")
        if not Path(path).is_file():
            raise BenchError(f"{text}: logits file {path} does not exist")
        return ArtifactSpec(text, kind, path, column=column)
    marker = "model_card.json"
    if not (Path(rest) / marker).is_file():
        what = "bundle" if kind == "tflite" else "checkpoint"
        raise BenchError(f"{text}: {rest} is not a {what} folder (no {marker} there)")
    return ArtifactSpec(text, kind, rest)


def _parse_arch(text: str, rest: str, kind: str = "arch") -> ArtifactSpec:
    from train.registry import BACKBONES

    name, _, size = rest.partition("@")
    if name not in BACKBONES:
        raise BenchError(f"{text}: unknown architecture {name!r}; valid: {', '.join(BACKBONES)}")
    try:
        input_size = int(size) if size else 224
    except ValueError as error:
        raise BenchError(f"{text}: the size after '@' must be an integer, got {size!r}") from error
    if not 16 <= input_size <= 4096:
        raise BenchError(f"{text}: input size {input_size} is outside 16–4096")
    return ArtifactSpec(text, kind, name, input_size=input_size, random_weights=True)


def default_spec_texts(external: bool = False) -> list[str]:
    """The default SPECs; logits rows only for the FracAtlas split (they score its files)."""
    bundles = [
        f"tflite:{display_path(card.parent)}"
        for card in sorted((REPO_ROOT / "models").glob("*/model_card.json"))
        if (card.parent / "model.tflite").is_file()
    ]
    checkpoints = [
        f"torch:{display_path(REPO_ROOT / path)}"
        for path in DEFAULT_CHECKPOINTS
        if (REPO_ROOT / path / "model_card.json").is_file()
    ]
    logits = []
    if not external and (REPO_ROOT / DEFAULT_LOGITS).is_file():
        csv_path = display_path(REPO_ROOT / DEFAULT_LOGITS)
        logits = [f"logits:{csv_path}:{column}" for column in TEACHER_COLUMNS]
    return [*bundles, *checkpoints, *DEFAULT_ARCHITECTURES, *logits]


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def resolve_specs(texts: Sequence[str] | None, external: bool = False) -> list[ArtifactSpec]:
    """Parse the requested SPECs (``default`` expands in place); repeats are dropped."""
    expanded: list[str] = []
    for text in texts or ["default"]:
        expanded += default_spec_texts(external) if text == "default" else [text]
    specs = [parse_spec(text) for text in dict.fromkeys(expanded)]
    if external and any(spec.kind == "logits" for spec in specs):
        raise BenchError(
            "logits:… rows hold a GPU run's scores of FracAtlas files; they cannot score an "
            "external folder. Leave them out of --models."
        )
    if not specs:
        raise BenchError("no artifact to benchmark; pass --models SPEC ...")
    return specs
