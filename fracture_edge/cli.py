"""The ``fracture-edge`` command line. Each verb lives in its stage's package and is imported
only when it runs, so ``fracture-edge --help`` works with the base install alone.

Errors are mapped to messages in exactly one place (:func:`main`): a :class:`FractureEdgeError`
prints its message and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cli import add_bench_compare_parser, add_bench_parser, add_measure_parser
from compress.cli import add_parsers as add_compress_parsers
from edge_app.app_cli import add_app_parser
from edge_app.calibrate_cli import add_calibrate_parser
from edge_app.errors import FractureEdgeError, UsageError
from edge_app.files import check_output
from edge_app.web_cli import add_web_parser
from fracture_edge import __version__
from fracture_edge.doctor import add_doctor_parser
from train.feature_cli import add_parsers as add_feature_parsers

logger = logging.getLogger("fracture_edge")


# --------------------------------------------------------------------------- data verbs


def _data_inputs(path: str | Path, samples=()) -> list[Path]:
    """What a data command reads and must never write into: the data folder (or the manifest
    and the folders of its images)."""
    path = Path(path)
    if path.is_dir():
        return [path]
    return [path, *sorted({Path(sample.path).parent for sample in samples})]


def _data_audit(args: argparse.Namespace) -> int:
    from edge_app._optional import require
    from train.audit import audit_dataset, write_json
    from train.audit_report import write_report
    from train.datasets import open_dataset

    require("matplotlib.figure", "draw the audit plots")  # fail before a long scan, not after
    samples = list(open_dataset(args.path))
    inputs = _data_inputs(args.path, samples)
    out_dir = check_output(args.out, inputs, args.overwrite, folder=True, what="audit report")
    json_target = check_output(
        args.json or out_dir / "audit.json", inputs, args.overwrite, what="audit JSON"
    )
    result = audit_dataset(samples, workers=args.workers)
    report = write_report(result, out_dir)
    json_path = write_json(result, json_target)
    print(json.dumps(result.summary["counts"], indent=1))
    print(f"report: {report}\njson:   {json_path}")
    return 0


def _data_split(args: argparse.Namespace) -> int:
    from train.audit import audit_dataset, read_json, write_json
    from train.datasets import open_dataset
    from train.held_out import held_out_indices
    from train.splits import (
        SplitConfig,
        make_split,
        read_split,
        split_counts,
        split_id,
        write_split,
    )

    if args.hold_out and args.test is not None:
        raise UsageError(
            f"--hold-out {args.hold_out} makes the held-out films the test set; drop --test"
        )
    samples = list(open_dataset(args.path))
    inputs = _data_inputs(args.path, samples) + ([args.audit] if args.audit else [])
    if "{split_id}" not in str(args.out):
        check_output(args.out, inputs, args.overwrite, what="split")
    if args.keep_from:
        inputs.append(args.keep_from)
    if args.audit:
        audit = read_json(args.audit)
    else:
        logger.info("no --audit given: auditing %s first", args.path)
        audit_path = check_output(
            Path(args.out).with_suffix(".audit.json"), inputs, args.overwrite, what="audit JSON"
        )
        result = audit_dataset(samples, workers=args.workers)
        audit = result.to_json()
        write_json(result, audit_path)
    test = 0.15 if args.test is None else args.test
    config = SplitConfig(args.val, test, args.folds, args.seed, args.keep_truncated)
    root = Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent
    previous = read_split(args.keep_from) if args.keep_from else None
    held_out = held_out_indices(args.hold_out, samples) if args.hold_out else []
    rows = make_split(
        samples, audit, config, root=root.resolve(), previous=previous, held_out=held_out
    )
    identifier = split_id(rows)
    out = check_output(
        str(args.out).replace("{split_id}", identifier), inputs, args.overwrite, what="split"
    )
    write_split(rows, out)
    summary = {"split_id": identifier, "counts": split_counts(rows)}
    if args.hold_out:
        summary["held_out"] = {"name": args.hold_out, "images": len(held_out)}
    print(json.dumps(summary, indent=1))
    print(f"split: {out}")
    return 0


def _data_cache(args: argparse.Namespace) -> int:
    from train.cache import CacheConfig, build_cache
    from train.datasets import open_dataset
    from train.splits import read_split

    samples = list(open_dataset(args.path))
    inputs = _data_inputs(args.path, samples) + [args.split]
    out = check_output(args.out, inputs, args.overwrite, folder=True, what="cache")
    meta = build_cache(
        samples,
        read_split(args.split),
        out,
        CacheConfig(size=args.size, quality=args.quality, format=args.format),
        workers=args.workers,
    )
    print(json.dumps(meta, indent=1))
    return 0


def _data_labels(args: argparse.Namespace) -> int:
    from benchmarks.split_labels import write_labels

    counts = write_labels(args.split_csv, args.split, args.out, args.overwrite)
    print(f"{args.out}: {counts['films']} films, {counts['fractured']} fractured")
    return 0


def _add_data_parser(verbs: argparse._SubParsersAction) -> None:
    from train.held_out import HOLD_OUTS  # numpy and Pillow only: --help stays light

    data = verbs.add_parser("data", help="audit, split and cache a data set; labels from a split")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="VERB")

    audit = data_verbs.add_parser("audit", help="find duplicates, label conflicts, truncated files")
    audit.add_argument("path", help="FracAtlas root, folder-per-class tree or CSV manifest")
    audit.add_argument("--out", default="runs/audit", help="folder for the report and plots")
    audit.add_argument("--json", help="write the audit JSON here (default: OUT/audit.json)")
    audit.add_argument("--workers", type=int, default=2)
    audit.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    audit.set_defaults(handler=_data_audit)

    split = data_verbs.add_parser("split", help="leak-free stratified grouped split")
    split.add_argument("path", help="FracAtlas root, folder-per-class tree or CSV manifest")
    split.add_argument("--audit", help="audit JSON to take duplicate groups from (else audit now)")
    split.add_argument(
        "--out",
        default="runs/split.csv",
        help="split CSV to write; '{split_id}' in it is replaced by the split's id",
    )
    split.add_argument(
        "--val",
        type=float,
        default=0.15,
        help="validation fraction (with --hold-out: of the films not held out)",
    )
    split.add_argument("--test", type=float, help="test fraction (default 0.15)")
    split.add_argument(
        "--hold-out",
        choices=HOLD_OUTS,
        help="test on every film of this acquisition only: 'large-format' puts every film "
        "with a long side of 1,000 px or more in test, keeps train and val free of them and "
        "excludes their near-duplicates (docs/data.md)",
    )
    split.add_argument("--folds", type=int, default=0, help="k folds over train+val (0: none)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument(
        "--keep-truncated",
        action="store_true",
        help="keep truncated files instead of excluding them",
    )
    split.add_argument(
        "--keep-from",
        metavar="SPLIT_CSV",
        help="keep every group's split and fold from this earlier split file; "
        "only exclusions and new images change",
    )
    split.add_argument("--workers", type=int, default=2)
    split.add_argument("--overwrite", action="store_true", help="replace an existing split file")
    split.set_defaults(handler=_data_split)

    cache = data_verbs.add_parser("cache", help="pre-letterboxed JPEG cache for the GPU machine")
    cache.add_argument("path", help="FracAtlas root, folder-per-class tree or CSV manifest")
    cache.add_argument("--split", required=True, help="split CSV from 'data split'")
    cache.add_argument("--out", default="cache/fracatlas-256")
    cache.add_argument("--size", type=int, default=256)
    cache.add_argument("--quality", type=int, default=90, help="JPEG quality (90)")
    cache.add_argument(
        "--format",
        choices=("jpeg", "png", "png16"),
        default="jpeg",
        help="png16: lossless 16-bit, for training at --size (the app's input up to 0.5/65535); "
        "png: 8-bit (up to 0.5/255, half the size); jpeg: compact (default)",
    )
    cache.add_argument("--workers", type=int, default=2)
    cache.add_argument(
        "--overwrite", action="store_true", help="write into an existing, non-empty folder"
    )
    cache.set_defaults(handler=_data_cache)

    labels = data_verbs.add_parser(
        "labels",
        help="a split's rows as an external labels CSV (file,fracture) for bench --external",
        description="Write file,fracture for the rows of one split of a split file, with file "
        "the row's path relative to the data root (its relpath), so that bench --external ROOT "
        "--labels CSV scores those films where they are, as another site's: nothing is copied "
        "(docs/calibration.md).",
    )
    labels.add_argument("split_csv", metavar="SPLIT_CSV", help="split file from 'data split'")
    labels.add_argument("--split", default="test", help="which rows (default: test)")
    labels.add_argument("--out", required=True, help="labels CSV to write")
    labels.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    labels.set_defaults(handler=_data_labels)


# --------------------------------------------------------------------------- evaluation


def _evaluate(args: argparse.Namespace) -> int:
    from train.evaluate import run_evaluation

    check_output(args.out, [args.logits], args.overwrite, folder=True, what="evaluation")
    paths = run_evaluation(
        args.logits,
        args.out,
        models=args.model,
        data_root=args.data,
        sensitivity_target=args.sensitivity,
        resamples=args.resamples,
        seed=args.seed,
    )
    print(paths["markdown"].read_text())
    print(f"report: {paths['markdown']}\njson:   {paths['json']}")
    return 0


def _add_evaluate_parser(verbs: argparse._SubParsersAction) -> None:
    evaluate = verbs.add_parser(
        "evaluate",
        help="test metrics, operating points, calibration and subgroups from a logits CSV",
    )
    evaluate.add_argument(
        "--logits",
        required=True,
        help="CSV file,split,label,<model>... (a checkpoint's logits.csv, or `fracture-edge "
        "logits`)",
    )
    evaluate.add_argument(
        "--model",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="model column(s) to evaluate (default: all)",
    )
    evaluate.add_argument(
        "--data", help="FracAtlas root, for test AUROC by region / hardware / multiscan"
    )
    evaluate.add_argument("--out", required=True, help="folder for evaluation.json/.md and plots")
    evaluate.add_argument(
        "--sensitivity",
        type=float,
        default=0.95,
        help="validation sensitivity the 'doubt' threshold must reach (default 0.95)",
    )
    evaluate.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    evaluate.set_defaults(handler=_evaluate)


# --------------------------------------------------------------------------- train verbs


def _train_options(
    parser: argparse.ArgumentParser, distill: bool, from_checkpoint: bool = False
) -> None:
    """One option per TrainConfig field, generated so the CLI and the config never drift.

    ``from_checkpoint``: the values default to a checkpoint's recipe (``prune``); the verb's
    description says how.
    """
    import dataclasses
    import typing

    from train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    distill_only = {"teachers", "teacher_logits", "temperature", "alpha", "attention_weight"}
    parser.add_argument("--config", help="YAML file of TrainConfig fields (CLI flags override it)")
    if not from_checkpoint:
        parser.add_argument(
            "--plan",
            help="YAML plan of several runs (configs/*.yaml; see train/plan.py); the flags below "
            "then override every run and --out is the plan's output folder",
        )
        parser.add_argument(
            "--only",
            nargs="+",
            metavar="RUN",
            help="with --plan: these runs (and the "
            "teachers they need whose checkpoints are missing)",
        )
    for field in dataclasses.fields(TrainConfig):
        if field.name in distill_only and not distill:
            continue
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        kwargs: dict = {"dest": field.name, "default": None}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is list:
            kwargs["nargs"] = "*"
        else:
            args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            kwargs["type"] = args[0]
        if field.name == "backbone":
            from train.registry import BACKBONES

            kwargs["choices"] = BACKBONES
        if field.name == "pretrained":
            kwargs["choices"] = ["imagenet", "offline"]
        default = field.default if field.default is not dataclasses.MISSING else "[]"
        if from_checkpoint:
            default = "from the checkpoint, see above"
        parser.add_argument(flag, help=f"default: {default}", **kwargs)


def _train(args: argparse.Namespace) -> int:
    from train.config import config_keys, load_config

    overrides = {key: getattr(args, key, None) for key in config_keys()}
    if args.plan:
        return _train_plan(args, overrides)
    if args.only:
        raise UsageError("--only names runs of a plan; give the plan with --plan FILE")
    from train.trainer import train

    config = load_config(args.config, overrides)
    if args.verb == "distill" and not config.distill:
        raise UsageError("distill needs --teachers CHECKPOINT... or --teacher-logits FILE:COLUMN")
    card = train(config)
    if card:
        keys = ("architecture", "initialisation", "best_epoch", "metrics")
        print(json.dumps({k: card[k] for k in keys}, indent=1, default=str))
        print(f"checkpoint: {config.out}")
    return 0


def _train_plan(args: argparse.Namespace, overrides: dict) -> int:
    from train.plan import load_plan, override_flags, run_plan

    if args.config:
        raise UsageError("give either --plan (several runs) or --config (one run), not both")
    out = overrides.pop("out", None)
    overrides.pop("name", None)
    plan = load_plan(args.plan, overrides, out=out)
    flags = override_flags(overrides) + (["--out", out] if out else [])
    summary = run_plan(plan, args.only, flags)
    print(json.dumps(summary, indent=1, default=str))
    print(f"plan summary: {plan.out / 'plan.json'}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from compress.prune import fine_tune_base, prune_checkpoint
    from train.checkpoints import read_card
    from train.config import config_keys, load_config

    if not args.out:
        raise UsageError("prune needs --out DIR, the folder for the pruned checkpoint")
    overrides = {key: getattr(args, key, None) for key in config_keys()}
    base = fine_tune_base(read_card(args.checkpoint))
    config = load_config(args.config, overrides, base=base)
    card, report = prune_checkpoint(
        args.checkpoint, config, args.ratio, args.importance, args.round_to
    )
    print("\n".join(report.lines()))
    keys = ("architecture", "initialisation", "best_epoch", "metrics")
    print(json.dumps({k: card[k] for k in keys}, indent=1, default=str))
    print(f"checkpoint: {config.out}")
    return 0


def _logits(args: argparse.Namespace) -> int:
    from train.checkpoints import cache_logits, write_logits_csv

    check_output(args.out, [*args.checkpoints, args.cache], args.overwrite, what="logits")
    rows, logits = cache_logits(args.checkpoints, args.cache, tuple(args.splits))
    print(f"logits: {write_logits_csv(args.out, rows, logits)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from train.explain_run import explain_cache

    check_output(
        args.out, [args.checkpoint, args.cache], args.overwrite, folder=True, what="explanations"
    )
    report = explain_cache(args.checkpoint, args.cache, args.split, args.method, args.out)
    print(json.dumps(report, indent=1))
    return 0


def _teacher_probe(args: argparse.Namespace) -> int:
    from train.probe_teacher import FeatureSpec, probe_teacher

    check_output(args.out, [args.data, args.split], args.overwrite, folder=True, what="teacher")
    card = probe_teacher(
        args.data,
        args.split,
        [FeatureSpec.parse(text) for text in args.features],
        args.out,
        name=args.name,
        features_cache=args.features_cache,
        extra_logits=args.extra_logits or (),
        l2=args.l2,
        pooling=args.pooling,
    )
    print(json.dumps({k: card[k] for k in ("name", "features", "probe", "metrics")}, indent=1))
    print(f"teacher: {args.out} (distil with --teacher-logits {args.out}/logits.csv:{args.name})")
    return 0


def _soup(args: argparse.Namespace) -> int:
    import shlex

    from train.soup import uniform_soup

    check_output(args.out, args.checkpoints, args.overwrite, folder=True, what="soup")
    card = uniform_soup(args.checkpoints, args.out, shlex.join(["fracture-edge", *sys.argv[1:]]))
    print(json.dumps({"soup_of": card["soup_of"], "metrics": card["metrics"]}, indent=1))
    print(f"checkpoint: {args.out}")
    return 0


def _prepare_weights(args: argparse.Namespace) -> int:
    from train.models import export_offline_backbone

    check_output(args.out, [], args.overwrite, folder=True, what="weights")
    for name in args.backbones:
        print(export_offline_backbone(name, Path(args.out) / f"{name}.safetensors"))
    return 0


def _add_train_parsers(verbs: argparse._SubParsersAction) -> None:
    weights = verbs.add_parser(
        "prepare-weights", help="offline ImageNet backbones as small files for the GPU machine"
    )
    weights.add_argument(
        "--backbones", nargs="+", default=["tf_efficientnet_lite0", "tf_efficientnet_lite2"]
    )
    weights.add_argument("--out", default="cache/weights")
    weights.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    weights.set_defaults(handler=_prepare_weights)

    probe = verbs.add_parser(
        "teacher-probe",
        help="frozen multi-scale ImageNet features + a linear probe: a teacher's logits",
        description="Pool the last feature maps of frozen ImageNet backbones at several input "
        "sizes (read from the original films through the app's preprocessing), fit one "
        "balanced logistic regression on the split's train films (strength chosen on "
        "validation), and write every film's logit (train: cross-fitted over the folds) as a "
        "logits.csv a student distils with --teacher-logits.",
    )
    probe.add_argument("data", help="FracAtlas root (the original films)")
    probe.add_argument("--split", required=True, help="split CSV (train/val/test, folds)")
    probe.add_argument(
        "--features",
        nargs="+",
        required=True,
        metavar="BACKBONE@SIZE",
        help="e.g. tf_efficientnet_lite0@320 tf_efficientnet_lite2@320",
    )
    probe.add_argument(
        "--extra-logits",
        nargs="*",
        metavar="FILE.csv:COLUMN",
        help="other teachers' logits as extra features",
    )
    probe.add_argument("--name", default="probe_teacher", help="the logits column")
    probe.add_argument(
        "--l2", type=float, help="a fixed L2 strength (default: the best validation AUROC)"
    )
    probe.add_argument(
        "--pooling",
        choices=("avg+max", "avg"),
        default="avg+max",
        help="avg: the global-average half only (with one spec: a deployable student's head)",
    )
    probe.add_argument("--features-cache", default="runs/features")
    probe.add_argument("--out", required=True)
    probe.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    probe.set_defaults(handler=_teacher_probe)

    soup = verbs.add_parser(
        "soup", help="uniform soup: average checkpoints of one architecture, then evaluate"
    )
    soup.add_argument("checkpoints", nargs="+", help="checkpoint folders (same architecture)")
    soup.add_argument("--out", required=True)
    soup.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    soup.set_defaults(handler=_soup)

    explain = verbs.add_parser("explain", help="Grad-CAM + pointing game on the fracture boxes")
    explain.add_argument("checkpoint", help="checkpoint folder (model_card.json)")
    explain.add_argument("--cache", default="cache/fracatlas-256")
    explain.add_argument("--split", default="test")
    explain.add_argument(
        "--method", default="gradcam", choices=["gradcam", "gradcam++", "hirescam", "eigencam"]
    )
    explain.add_argument("--out", default="runs/explain")
    explain.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    explain.set_defaults(handler=_explain)

    logits = verbs.add_parser("logits", help="checkpoints' logits on the cache (CPU, fp32) as CSV")
    logits.add_argument("checkpoints", nargs="+", help="checkpoint folders (model_card.json)")
    logits.add_argument("--cache", default="cache/fracatlas-256")
    logits.add_argument("--splits", nargs="+", default=["val", "test"])
    logits.add_argument("--out", default="runs/logits.csv")
    logits.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    logits.set_defaults(handler=_logits)

    train = verbs.add_parser("train", help="train a teacher or a student on the image cache")
    _train_options(train, distill=False)
    train.set_defaults(handler=_train)
    distill = verbs.add_parser("distill", help="train a student with knowledge distillation")
    _train_options(distill, distill=True)
    distill.set_defaults(handler=_train)

    prune = verbs.add_parser(
        "prune",
        help="structured channel pruning, then a short distillation fine-tune",
        description="Remove --ratio of the channels of every conv layer (torch-pruning), "
        "fine-tune with the Trainer and write a checkpoint folder. Fine-tune flags default to "
        "the checkpoint's own recipe with --epochs 5; without --teachers or --teacher-logits "
        "the unpruned checkpoint is the teacher. --epochs 0 only evaluates and writes it.",
    )
    prune.add_argument("checkpoint", help="checkpoint folder (model_card.json)")
    prune.add_argument(
        "--ratio",
        type=float,
        required=True,
        help="fraction of channels removed from every prunable conv, in [0, 0.9]",
    )
    # the names of compress.prune.IMPORTANCES; that module imports torch, --help must not
    prune.add_argument(
        "--importance",
        choices=["l2", "bn_scale"],
        default="l2",
        help="keep the channels with the largest L2 norm or BatchNorm scale (default: l2)",
    )
    prune.add_argument(
        "--round-to", type=int, default=8, help="keep channel counts multiples of this (1: off)"
    )
    _train_options(prune, distill=True, from_checkpoint=True)
    prune.set_defaults(handler=_prune)


# --------------------------------------------------------------------------- app


def _predict(args: argparse.Namespace) -> int:
    from edge_app.predict import predict_paths
    from edge_app.runtime import DEFAULT_BUNDLE

    return predict_paths(
        args.paths,
        args.model or DEFAULT_BUNDLE,
        as_json=args.json,
        heatmaps=args.heatmaps,
        threads=args.threads,
        tta=args.tta,
        overwrite=args.overwrite,
    )


def _add_predict_parser(verbs: argparse._SubParsersAction) -> None:
    predict = verbs.add_parser(
        "predict",
        help="score images, DICOM, volumes or study folders with a TFLite bundle",
        description="One line per input (an image, a DICOM file, a NIfTI volume or a folder "
        "holding one study). With --json each line is one JSON object with path, "
        "fracture_probability, verdict (fracture | uncertain | no_fracture), region, peak ([x, y] "
        "of the heatmap's maximum), box ([x0, y0, x1, y1] around its top region, or null for no "
        "fracture; both normalised to the image), warnings and error. "
        "Unreadable inputs get an error line and exit code 1; the others are still scored. "
        "Nothing is written inside an input, nor over an existing file without --overwrite.",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH")
    predict.add_argument("--model", help="bundle folder (default: the shipped bundle)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="write overlay PNGs here (heatmap, box and legend), one per image, named "
        "<input>-<hash of its path>[-<index>].png; DIR must be new or empty and outside every "
        "input",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="let --heatmaps write into a non-empty DIR and replace overlays there (never "
        "inside an input)",
    )
    predict.add_argument("--threads", type=int, default=2, help="LiteRT threads, 1 to 64")
    predict.add_argument(
        "--tta",
        action="store_true",
        help="average the image's and its mirror's scores and maps (two invokes per image; "
        "the card's thresholds were chosen without it)",
    )
    predict.set_defaults(handler=_predict)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fracture-edge",
        description="Bone-fracture detection on radiographs, from training to the phone.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_data_parser(verbs)
    _add_train_parsers(verbs)
    add_feature_parsers(verbs)
    _add_evaluate_parser(verbs)
    add_compress_parsers(verbs)
    add_bench_parser(verbs)
    add_bench_compare_parser(verbs)
    add_measure_parser(verbs)
    _add_predict_parser(verbs)
    add_calibrate_parser(verbs)
    add_app_parser(verbs)
    add_web_parser(verbs)
    add_doctor_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. The one error mapping of the command line: an error FractureEdge raises on
    purpose (:class:`FractureEdgeError`: a bad flag, file, card or input) prints its message and
    exits 2; anything else is a bug, keeps its traceback and exits 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except FractureEdgeError as error:
        print(f"fracture-edge: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`... --json | head`): not a bug, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the final flush
        return 141  # what a shell reports for SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
