"""The model card: one schema for every artifact FractureEdge writes, checked whenever it is read.

Three kinds of artifact carry a ``model_card.json``:

- ``checkpoint``: a trained torch model (``model.safetensors``), written by the trainer;
- ``bundle``: what a phone runs (``model.tflite``), written by export or site calibration;
- ``probe``: the frozen-feature teacher's logits, written by ``teacher-probe``.

Each is written once, by the stage that makes it, through :func:`write_card`, and read through
:func:`read_card`, which validates every field a consumer relies on for type, range and
finiteness. A card that fails is refused with :class:`~edge_app.errors.ModelCardError` (exit 2
on the command line), never half-trusted: a NaN threshold would otherwise turn every verdict
into "no fracture". The names of the model's outputs live here too.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_app.errors import ModelCardError
from edge_app.preprocess import PreprocessConfig

CARD_FILE = "model_card.json"
FORMATS = {
    "checkpoint": "fracture-edge-checkpoint",
    "bundle": "fracture-edge-bundle",
    "probe": "fracture-edge-probe-teacher",
}
#: The benchmark report's format (not a card, but every format string lives here).
REPORT_FORMAT = "fracture-edge-bench"
FORMAT_VERSION = 1
#: The largest card read; a card is a few kilobytes, so anything near this is not a card.
MAX_CARD_BYTES = 1 << 20

#: The deployed graph's outputs (matched by shape at load time, named in the card).
LOGIT_OUTPUT = "fracture_logit"
CAM_OUTPUT = "cam"
OPERATING_POINTS = ("doubt", "fracture")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def aux_output_name(head: str) -> str:
    """The output name of an auxiliary head (e.g. ``region`` → ``region_logits``)."""
    return f"{head}_logits"


# --------------------------------------------------------------------------- reading


def parse_card(text: str | bytes, where: str = "model card") -> dict[str, Any]:
    """JSON text → a dict, refusing oversized, malformed or absurdly nested cards."""
    if len(text) > MAX_CARD_BYTES:
        raise ModelCardError(f"{where} is {len(text)} bytes; a model card is at most 1 MiB")
    try:
        card = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelCardError(f"{where} is not valid JSON: {error}") from error
    except RecursionError as error:
        raise ModelCardError(f"{where} is nested too deeply to be a model card") from error
    if not isinstance(card, dict):
        raise ModelCardError(f"{where} must hold a JSON object, not {type(card).__name__}")
    return card


def read_card(folder: str | Path, kind: str) -> dict[str, Any]:
    """``folder/model_card.json``, parsed and validated as a card of ``kind``."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"{folder} has no {CARD_FILE}: it is not a FractureEdge {kind}")
    return validate_card(parse_card(path.read_bytes(), str(path)), kind, str(path))


def write_card(folder: str | Path, card: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Stamp ``card`` with its format, validate it, and write it atomically; returns it."""
    stamped = {"format": FORMATS[kind], "format_version": FORMAT_VERSION, **dict(card)}
    stamped["format"], stamped["format_version"] = FORMATS[kind], FORMAT_VERSION
    path = Path(folder) / CARD_FILE
    validate_card(stamped, kind, str(path))
    try:
        text = json.dumps(stamped, indent=1, allow_nan=False) + "\n"
    except ValueError as error:  # NaN or infinity somewhere in the provenance
        raise ModelCardError(f"{path}: {error}; cards hold finite numbers only") from error
    staged = path.with_suffix(".json.tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)
    return stamped


# --------------------------------------------------------------------------- validation


def validate_card(card: Mapping[str, Any], kind: str, where: str = "model card") -> dict:
    """Check ``card`` as a card of ``kind``; returns it unchanged, or raises ModelCardError."""
    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {sorted(FORMATS)}, got {kind!r}")
    check = _Checker(card, where)
    if card.get("format") != FORMATS[kind]:
        raise ModelCardError(
            f"{where} is not a FractureEdge {kind} card (format {card.get('format')!r}, "
            f"expected {FORMATS[kind]!r})"
        )
    version = card.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelCardError(f"{where}: format_version must be a positive integer")
    if version > FORMAT_VERSION:
        raise ModelCardError(
            f"{where} has format version {version}; this FractureEdge reads up to "
            f"{FORMAT_VERSION}. Update fracture-edge."
        )
    check.text("name", optional=True)
    if kind == "probe":
        return dict(card)
    check.text("architecture")
    check.preprocessing()
    check.text_list("labels", optional=True)
    check.text_list("region_labels", optional=True)
    if kind == "checkpoint":
        check.sha256("weights_sha256", optional=True)
        heads = check.mapping("aux_heads", optional=True) or {}
        for head, classes in heads.items():
            check.integer(f"aux_heads.{head}", classes, low=1)
        check.text_list("feature_taps", optional=True)
        if "operating_points" in card:
            check.operating_points()
        if card.get("calibration_temperature") is not None:
            check.number("calibration_temperature", low=1e-3, high=1e3)
        return dict(card)
    _check_bundle(check, card)
    return dict(card)


def _check_bundle(check: _Checker, card: Mapping[str, Any]) -> None:
    where = check.where
    check.sha256("model_sha256")
    check.number("calibration_temperature", low=1e-3, high=1e3)
    check.operating_points()
    size = check.preprocessing().input_size
    model_input = check.mapping("input")
    shape = model_input.get("shape")
    if shape != [1, size, size, 1]:
        raise ModelCardError(f"{where}: input.shape must be [1, {size}, {size}, 1], got {shape!r}")
    if model_input.get("dtype", "float32") not in ("float32", "int8"):
        raise ModelCardError(f"{where}: input.dtype must be float32 or int8")
    outputs = check.mapping("outputs")
    for name, output_shape in outputs.items():
        if not (
            isinstance(output_shape, list)
            and output_shape
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in output_shape)
        ):
            raise ModelCardError(f"{where}: outputs.{name} must be a list of positive integers")
    for required in (LOGIT_OUTPUT, CAM_OUTPUT):
        if required not in outputs:
            raise ModelCardError(f"{where}: outputs lack '{required}'")
    if outputs[LOGIT_OUTPUT] != [1]:
        raise ModelCardError(f"{where}: outputs.{LOGIT_OUTPUT} must be [1]")
    grid = card.get("cam_shape")
    if not (
        isinstance(grid, list)
        and len(grid) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid)
    ):
        raise ModelCardError(f"{where}: cam_shape must be two positive integers, got {grid!r}")
    if [grid[0] * grid[1]] != outputs[CAM_OUTPUT]:
        raise ModelCardError(
            f"{where}: cam_shape {grid} does not match outputs.{CAM_OUTPUT} {outputs[CAM_OUTPUT]}"
        )
    if card.get("cam_scale") is not None:
        check.number("cam_scale", low=1e-9, high=1e9)
    regions = card.get("region_labels") or []
    region_output = outputs.get(aux_output_name("region"))
    if regions and region_output != [len(regions)]:
        raise ModelCardError(
            f"{where}: {len(regions)} region_labels but outputs.region_logits is {region_output}"
        )
    _check_shown_fields(check, card)


def _check_shown_fields(check: _Checker, card: Mapping[str, Any]) -> None:
    """What the app, the web page and reports show of a bundle: optional, but never of a type
    or range that would break or mislead the display."""
    where = check.where
    check.text("quantization", optional=True)
    record = card.get("site_calibration")
    if record is not None and not (
        isinstance(record, dict)
        and all(isinstance(record.get(key), str) and record[key] for key in ("site", "date"))
    ):
        raise ModelCardError(
            f"{where}: 'site_calibration' must be an object with non-empty 'site' and 'date' "
            f"strings, got {record!r}; re-run the calibration"
        )
    export = check.mapping("export", optional=True)
    if export.get("created") is not None and not isinstance(export["created"], str):
        raise ModelCardError(f"{where}: 'export.created' must be text")
    metrics = check.mapping("metrics", optional=True)
    for name in ("val_auroc", "test_auroc"):
        if metrics.get(name) is not None:
            check.number(f"metrics.{name}", 0.0, 1.0, metrics[name])
    for name in ("val_auroc_ci95", "test_auroc_ci95"):
        interval = metrics.get(name)
        if interval is None:
            continue
        if not isinstance(interval, list) or len(interval) != 2:
            raise ModelCardError(f"{where}: 'metrics.{name}' must be [low, high]")
        low, high = (check.number(f"metrics.{name}", 0.0, 1.0, value) for value in interval)
        if low > high:
            raise ModelCardError(f"{where}: 'metrics.{name}' has low {low} above high {high}")
    counts = metrics.get("test_counts")
    if counts is not None:
        if not isinstance(counts, dict):
            raise ModelCardError(f"{where}: 'metrics.test_counts' must be an object")
        if counts.get("images") is not None:
            check.integer("metrics.test_counts.images", counts["images"], low=0)


class _Checker:
    def __init__(self, card: Mapping[str, Any], where: str) -> None:
        self.card, self.where = card, where

    def _missing(self, key: str, optional: bool) -> bool:
        if key in self.card and self.card[key] is not None:
            return False
        if optional:
            return True
        raise ModelCardError(f"{self.where} lacks '{key}'")

    def text(self, key: str, optional: bool = False) -> None:
        if not self._missing(key, optional) and not isinstance(self.card[key], str):
            raise ModelCardError(f"{self.where}: '{key}' must be text")

    def text_list(self, key: str, optional: bool = False) -> None:
        if self._missing(key, optional):
            return
        value = self.card[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ModelCardError(f"{self.where}: '{key}' must be a list of text")

    def mapping(self, key: str, optional: bool = False) -> dict:
        if self._missing(key, optional):
            return {}
        value = self.card[key]
        if not isinstance(value, dict):
            raise ModelCardError(f"{self.where}: '{key}' must be an object")
        return value

    def sha256(self, key: str, optional: bool = False) -> None:
        if self._missing(key, optional):
            return
        value = self.card[key]
        if not isinstance(value, str) or not _SHA256.match(value):
            raise ModelCardError(f"{self.where}: '{key}' must be 64 lower-case hex digits")

    def number(self, key: str, low: float, high: float, value: Any = None) -> float:
        if value is None:
            self._missing(key, False)
            value = self.card[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelCardError(f"{self.where}: '{key}' must be a number, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise ModelCardError(
                f"{self.where}: '{key}' must be a finite number in [{low:g}, {high:g}], "
                f"got {value!r}"
            )
        return float(value)

    def integer(self, key: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ModelCardError(f"{self.where}: '{key}' must be an integer ≥ {low}")

    def operating_points(self) -> dict[str, float]:
        points = self.mapping("operating_points")
        values = {
            name: self.number(f"operating_points.{name}", 0.0, 1.0, points.get(name, "missing"))
            for name in OPERATING_POINTS
        }
        if values["doubt"] > values["fracture"]:
            raise ModelCardError(
                f"{self.where}: the doubt point ({values['doubt']}) exceeds the fracture point "
                f"({values['fracture']})"
            )
        return values

    def preprocessing(self) -> PreprocessConfig:
        section = self.mapping("preprocessing")
        for key in ("mean", "std", "fill"):
            if key in section:
                self.number(f"preprocessing.{key}", -1e3, 1e3, section[key])
        size = section.get("input_size")
        if isinstance(size, bool) or not isinstance(size, int):
            raise ModelCardError(f"{self.where}: preprocessing.input_size must be an integer")
        return PreprocessConfig.from_card(section)
