"""Calibration of a bundle to a site: ``fracture-edge calibrate DIR --labels CSV --out DIR``.

A threshold chosen on one hospital's films does not carry over to another's (different
detectors, exposure, projections, case mix), so a site refits, from its own labelled films and
with the bundle's own logits, what training chose on FracAtlas validation films:

- the temperature ``T`` of ``p = sigmoid(logit / T)`` (:func:`edge_app.metrics.fit_temperature`);
- the *doubt* point: the highest threshold reaching the card's target sensitivity (0.95), and
  the *fracture* point: Youden's J, both by the one selector,
  :func:`edge_app.metrics.choose_operating_points`, as training does.

The model file is not touched: the new bundle holds a byte-identical ``model.tflite`` (same
sha256) and a card that records the calibration (``site_calibration``: site, date, counts,
target, achieved rates with bootstrap CIs, warnings, and the previous temperature and points).

Runs where the app runs: numpy, Pillow and LiteRT (the ``app`` extra), no torch. The fitting
functions are pure (arrays and dicts in, dicts out); :func:`calibrate_folder` does the I/O.
See docs/calibration.md.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import SiteCalibrationError
from edge_app.files import file_sha256
from edge_app.labelled_folder import LabelledFilm, read_labels_csv
from edge_app.metrics import (
    apply_temperature,
    auroc,
    bootstrap_proportion_ci,
    choose_operating_points,
    fit_temperature,
    sensitivity_specificity,
)

logger = logging.getLogger(__name__)

CARD_KEY = "site_calibration"
OPERATING_POINTS = ("doubt", "fracture")
#: Fewer fractured films than this and the doubt point rests on one or two films: at a 0.95
#: target the point is the ⌈0.95 n⌉-th highest fractured score, so with n = 30 it is the 29th
#: of 30 and each film moves the sensitivity by 0.033; the binomial 95 % CI of 0.95 is then
#: already 0.15 wide. Unfractured films set the specificity and the temperature alike.
DEFAULT_MIN_FRACTURED = 30
DEFAULT_MIN_UNFRACTURED = 30
#: A sensitivity CI wider than this gets a warning (about 40 fractured films at 0.95 stay under).
DEFAULT_MAX_CI_WIDTH = 0.15
DEFAULT_SENSITIVITY_TARGET = 0.95
_TARGET_IN_RULE = re.compile(r"sensitivity\s*>=\s*([0-9]*\.?[0-9]+)")
_TEMPERATURE_LIMITS = (1e-3, 1e3)  # edge_app.metrics.fit_temperature clamps to these


@dataclass(frozen=True)
class LabelCounts:
    """Labelled films of a site: fractured, unfractured, and of unknown label (ignored)."""

    fractured: int
    unfractured: int
    unknown: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "fractured": self.fractured,
            "unfractured": self.unfractured,
            "unknown": self.unknown,
        }


def count_labels(labels: Sequence[int | None]) -> LabelCounts:
    """Counts of 1, 0 and None (unknown) labels."""
    values = list(labels)
    return LabelCounts(
        fractured=sum(1 for v in values if v == 1),
        unfractured=sum(1 for v in values if v == 0),
        unknown=sum(1 for v in values if v is None),
    )


def check_counts(counts: LabelCounts, min_fractured: int, min_unfractured: int) -> None:
    """Refuse, naming what was found and what is needed, when a class has too few films."""
    short = []
    if counts.fractured < min_fractured:
        short.append(f"{counts.fractured} fractured (need at least {min_fractured})")
    if counts.unfractured < min_unfractured:
        short.append(f"{counts.unfractured} unfractured (need at least {min_unfractured})")
    if short:
        ignored = f"; {counts.unknown} of unknown label are ignored" if counts.unknown else ""
        raise SiteCalibrationError(
            f"too few labelled films to calibrate: {' and '.join(short)}{ignored}. Label more "
            "of this site's films (fracture 1 or 0), or lower --min-fractured / "
            "--min-unfractured knowing that the operating points then move with every film."
        )


def sensitivity_target(card: Mapping[str, Any]) -> float:
    """The doubt point's target: a previous site calibration's, else the number in the card's
    ``operating_point_rules.doubt.rule`` (``"validation sensitivity >= 0.95"``), else 0.95."""
    previous = (card.get(CARD_KEY) or {}).get("target_sensitivity")
    if previous is not None:
        return _valid_target(previous)
    rule = ((card.get("operating_point_rules") or {}).get("doubt") or {}).get("rule", "")
    found = _TARGET_IN_RULE.search(str(rule))
    return _valid_target(float(found.group(1))) if found else DEFAULT_SENSITIVITY_TARGET


def _valid_target(value: Any) -> float:
    value = float(value)
    if not 0 < value <= 1:
        raise SiteCalibrationError(f"a sensitivity target must lie in (0, 1], got {value}")
    return value


# --------------------------------------------------------------------------- the fit


@dataclass
class SiteCalibration:
    """What was refitted on a site's labelled films, and how it did on them."""

    temperature: float
    operating_points: dict[str, float]
    operating_logits: dict[str, float]
    target_sensitivity: float
    counts: LabelCounts
    auroc: float | None
    achieved: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def fit_site_calibration(
    labels: Sequence[int | None],
    logits: Sequence[float],
    target: float = DEFAULT_SENSITIVITY_TARGET,
    min_fractured: int = DEFAULT_MIN_FRACTURED,
    min_unfractured: int = DEFAULT_MIN_UNFRACTURED,
    max_ci_width: float = DEFAULT_MAX_CI_WIDTH,
    resamples: int = 2000,
    seed: int = 0,
) -> SiteCalibration:
    """Temperature and both operating points from a site's films (``None`` labels ignored).

    ``achieved``: per point, the sensitivity and specificity on these same films with
    percentile-bootstrap 95 % CIs, the threshold held fixed and each class resampled apart
    (the films were counted by label). They are in-sample: the doubt sensitivity is at least
    the target by construction, and its CI says how much that rests on a few films.
    ``bench --external … --calibrate K`` measures the points on films not used to choose them.
    """
    labels = list(labels)
    values = np.asarray(logits, dtype=np.float64).ravel()
    if values.size != len(labels):
        raise ValueError(f"{len(labels)} labels but {values.size} logits")
    counts = count_labels(labels)
    check_counts(counts, min_fractured, min_unfractured)
    target = _valid_target(target)
    known = np.asarray([label is not None for label in labels])
    truth = np.asarray([label == 1 for label in labels])[known]
    scores = values[known]
    if not np.isfinite(scores).all():
        raise SiteCalibrationError(
            f"{int((~np.isfinite(scores)).sum())} of the labelled films have a non-finite "
            "logit; the model did not score them: check those files"
        )
    warnings: list[str] = []
    temperature = fit_temperature(truth, scores)
    if any(math.isclose(temperature, limit, rel_tol=1e-6) for limit in _TEMPERATURE_LIMITS):
        warnings.append(
            f"the temperature fit hit its limit (T = {temperature:g}): the model's logits carry "
            "almost no signal on this site's films, or separate them perfectly; do not deploy "
            "without review"
        )
    probabilities = apply_temperature(scores, temperature)
    points = choose_operating_points(truth, probabilities, target)
    if points["fracture"] < points["doubt"]:
        # Youden's J peaks above the target sensitivity: the uncertain band would be empty and
        # inverted, which no runtime accepts. The doubt point is the safety point; keep it.
        warnings.append(
            f"Youden's J peaks at p = {points['fracture']:.4f}, below the doubt point "
            f"({points['doubt']:.4f}); the fracture point is set to the doubt point, so this "
            "site gets no 'uncertain — review' band"
        )
        points["fracture"] = points["doubt"]
    achieved = {
        name: _achieved(truth, probabilities, threshold, resamples, seed)
        for name, threshold in points.items()
    }
    for name in OPERATING_POINTS:
        low, high = achieved[name]["sensitivity_ci95"]
        if low is not None and high - low > max_ci_width:
            warnings.append(
                f"the {name} point's sensitivity on the site's {counts.fractured} fractured "
                f"films is {achieved[name]['sensitivity']:.3f} with a 95 % CI of "
                f"{low:.3f}–{high:.3f} (width {high - low:.3f} > {max_ci_width}); label more "
                "fractured films before trusting it"
            )
    for message in warnings:
        logger.info("site calibration: %s", message)
    return SiteCalibration(
        temperature=float(temperature),
        operating_points={name: float(points[name]) for name in OPERATING_POINTS},
        operating_logits={
            name: float(scores[probabilities >= points[name]].min()) for name in OPERATING_POINTS
        },
        target_sensitivity=target,
        counts=counts,
        auroc=_rounded(auroc(truth, scores)),
        achieved=achieved,
        warnings=warnings,
    )


def _achieved(
    truth: np.ndarray, probabilities: np.ndarray, threshold: float, resamples: int, seed: int
) -> dict[str, Any]:
    sensitivity, specificity = sensitivity_specificity(truth, probabilities, threshold)
    called = probabilities >= threshold
    return {
        "sensitivity": _rounded(sensitivity),
        "sensitivity_ci95": _interval(bootstrap_proportion_ci(called[truth], resamples, seed)),
        "specificity": _rounded(specificity),
        "specificity_ci95": _interval(
            bootstrap_proportion_ci(~called[~truth], resamples, seed + 1)
        ),
    }


def _rounded(value: float, digits: int = 4) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def _interval(bounds: tuple[float, float]) -> list[float | None]:
    return [_rounded(bound) for bound in bounds]


# --------------------------------------------------------------------------- the card


def calibrated_card(
    card: Mapping[str, Any],
    calibration: SiteCalibration,
    site: str,
    name: str,
    source: str,
    created: float | None = None,
) -> dict[str, Any]:
    """The calibrated bundle's card: ``card`` with the new temperature and points (and
    ``operating_logits`` where the card has them), and a ``site_calibration`` record holding
    the previous ones. Everything else, ``model_sha256`` included, is kept."""
    created = time.time() if created is None else created
    new = copy.deepcopy(dict(card))
    previous: dict[str, Any] = {
        "name": card.get("name"),
        "calibration_temperature": card.get("calibration_temperature", 1.0),
        "operating_points": copy.deepcopy(card["operating_points"]),
        "operating_point_rules": copy.deepcopy(card.get("operating_point_rules")),
    }
    if "operating_logits" in card:
        previous["operating_logits"] = copy.deepcopy(card["operating_logits"])
    if card.get(CARD_KEY):
        previous[CARD_KEY] = copy.deepcopy(card[CARD_KEY])
    new["name"] = name
    new["calibration_temperature"] = calibration.temperature
    new["operating_points"] = dict(calibration.operating_points)
    if "operating_logits" in card:
        new["operating_logits"] = dict(calibration.operating_logits)
    counts = f"{calibration.counts.fractured} fractured, {calibration.counts.unfractured} not"
    new["operating_point_rules"] = {
        "doubt": {
            "rule": f"site sensitivity >= {calibration.target_sensitivity}",
            "site": f"{site} ({counts})",
        },
        "fracture": {"rule": "site Youden J maximum", "site": f"{site} ({counts})"},
    }
    new[CARD_KEY] = {
        "site": site,
        "date": time.strftime("%Y-%m-%d", time.gmtime(created)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        "source_bundle": source,
        "counts": calibration.counts.to_json(),
        "target_sensitivity": calibration.target_sensitivity,
        "method": "temperature scaling (binary NLL) and the training selector "
        "(doubt: highest threshold with site sensitivity >= target; fracture: Youden J), "
        "fitted on the site's labelled films",
        "site_auroc": calibration.auroc,
        "achieved": copy.deepcopy(calibration.achieved),
        "achieved_note": "on the films the points were chosen on (in-sample); CIs: "
        "percentile bootstrap, threshold fixed, each class resampled apart",
        "warnings": list(calibration.warnings),
        "previous": previous,
        "metrics_note": "'metrics' are FracAtlas numbers at the previous operating points "
        "(site_calibration.previous); AUROC does not depend on them",
    }
    validate_calibrated_card(new)
    return new


def validate_calibrated_card(card: Mapping[str, Any]) -> None:
    """Finite temperature > 0; finite points in [0, 1] with doubt ≤ fracture. A card that
    breaks these would turn verdicts silently wrong; refuse to write it."""
    temperature = card.get("calibration_temperature")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise SiteCalibrationError(f"calibration_temperature {temperature!r} is not finite")
    if temperature <= 0:
        raise SiteCalibrationError(f"calibration_temperature must be > 0, got {temperature}")
    points = card.get("operating_points") or {}
    for name in OPERATING_POINTS:
        value = points.get(name)
        if not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
            raise SiteCalibrationError(f"operating point {name!r} = {value!r} is not in [0, 1]")
    if points["doubt"] > points["fracture"]:
        raise SiteCalibrationError("the doubt point exceeds the fracture point")


# --------------------------------------------------------------------------- the bundle


def check_output_folder(source: Path, out: Path, overwrite: bool) -> None:
    """Never the source bundle; an existing folder only with ``overwrite``."""
    if out.resolve() == source.resolve():
        raise SiteCalibrationError(
            f"--out {out} is the source bundle; a calibrated bundle goes into a new folder "
            "(e.g. models/NAME-SITE), so the original stays as it was"
        )
    if out.exists() and not overwrite:
        raise SiteCalibrationError(
            f"{out} already exists; choose another --out, or pass --overwrite to replace its "
            "model.tflite and model_card.json"
        )
    if out.exists() and not out.is_dir():
        raise SiteCalibrationError(f"{out} exists and is not a folder")


def write_calibrated_bundle(
    source: Path, out: Path, card: Mapping[str, Any], overwrite: bool = False
) -> Path:
    """``out/model.tflite`` (a byte copy of the source's, sha256 checked against the card) and
    ``out/model_card.json``. Returns ``out``."""
    source, out = Path(source), Path(out)
    check_output_folder(source, out, overwrite)
    validate_calibrated_card(card)
    out.mkdir(parents=True, exist_ok=True)
    staged = out / "model.tflite.partial"
    shutil.copyfile(source / "model.tflite", staged)
    copied, expected = file_sha256(staged), card.get("model_sha256")
    if copied != expected or file_sha256(source / "model.tflite") != expected:
        staged.unlink()
        raise SiteCalibrationError(
            f"the copied model.tflite has sha256 {copied[:12]}…, the card expects "
            f"{str(expected)[:12]}…: the source bundle changed while it was copied; run again"
        )
    staged.replace(out / "model.tflite")
    text = json.dumps(card, indent=1, allow_nan=False) + "\n"
    (out / "model_card.json").write_text(text, encoding="utf-8")
    logger.info("wrote the calibrated bundle %s", out)
    return out


# --------------------------------------------------------------------------- I/O


def score_films(detector: Any, films: Sequence[LabelledFilm]) -> np.ndarray:
    """The bundle's raw fracture logit per film, through the app's loader, the card's
    preprocessing and :meth:`edge_app.runtime.FractureDetector.infer` (TTA if it is on)."""
    from edge_app.card import LOGIT_OUTPUT
    from edge_app.preprocess import preprocess
    from edge_app.radiograph import load_radiograph

    logits = np.empty(len(films), dtype=np.float64)
    for index, film in enumerate(films):
        pixels = load_radiograph(film.path).pixels
        model_input, _ = preprocess(pixels, detector.preprocessing)
        logits[index] = float(detector.infer(model_input)[LOGIT_OUTPUT][0, 0])
        if (index + 1) % 50 == 0:
            logger.info("scored %d of %d films", index + 1, len(films))
    return logits


def calibrate_folder(
    folder: str | Path,
    labels_csv: str | Path,
    bundle: str | Path,
    out: str | Path,
    site: str | None = None,
    target: float | None = None,
    min_fractured: int = DEFAULT_MIN_FRACTURED,
    min_unfractured: int = DEFAULT_MIN_UNFRACTURED,
    max_ci_width: float = DEFAULT_MAX_CI_WIDTH,
    resamples: int = 2000,
    seed: int = 0,
    threads: int | None = 2,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score a site's labelled films with ``bundle``, refit, write the calibrated bundle to
    ``out``; returns its card. Counts and ``out`` are checked before any image is read."""
    from edge_app.runtime import Bundle, FractureDetector

    folder, bundle, out = Path(folder), Path(bundle), Path(out)
    films = read_labels_csv(folder, labels_csv)
    counts = count_labels([film.label for film in films])
    check_counts(counts, min_fractured, min_unfractured)
    check_output_folder(bundle, out, overwrite)
    source = Bundle.load(bundle)
    target = sensitivity_target(source.card) if target is None else _valid_target(target)
    labelled = [film for film in films if film.label is not None]
    logger.info(
        "scoring %d labelled films (%d of unknown label ignored)", len(labelled), counts.unknown
    )
    detector = FractureDetector(source, num_threads=threads)
    logits = score_films(detector, labelled)
    calibration = fit_site_calibration(
        [film.label for film in labelled],
        logits,
        target,
        min_fractured,
        min_unfractured,
        max_ci_width,
        resamples,
        seed,
    )
    calibration.counts = counts  # the unknown rows were never scored; count them anyway
    card = calibrated_card(
        source.card,
        calibration,
        site=site or folder.resolve().name,
        name=out.name,
        source=str(bundle),
    )
    write_calibrated_bundle(bundle, out, card, overwrite)
    Bundle.load(out)  # the written bundle loads, its model file matching its card
    return card


def summary_lines(card: Mapping[str, Any]) -> list[str]:
    """A calibrated card's record as a few lines of text for a terminal."""
    record = card[CARD_KEY]
    counts, previous = record["counts"], record["previous"]
    lines = [
        f"site {record['site']} ({record['date']}): {counts['fractured']} fractured, "
        f"{counts['unfractured']} unfractured films ({counts['unknown']} of unknown label "
        f"ignored); site AUROC {record['site_auroc']}",
        f"temperature {previous['calibration_temperature']} -> "
        f"{card['calibration_temperature']:.4f}",
    ]
    for name in OPERATING_POINTS:
        achieved = record["achieved"][name]
        low, high = achieved["sensitivity_ci95"]
        spec_low, spec_high = achieved["specificity_ci95"]
        goal = f" (target {record['target_sensitivity']})" if name == "doubt" else ""
        lines.append(
            f"{name}: p >= {previous['operating_points'][name]:.4f} -> "
            f"{card['operating_points'][name]:.4f}; on the site's films sensitivity "
            f"{achieved['sensitivity']} [{low}, {high}]{goal}, specificity "
            f"{achieved['specificity']} [{spec_low}, {spec_high}]"
        )
    lines += [f"warning: {message}" for message in record["warnings"]]
    return lines
