"""The compress verbs of ``fracture-edge``: ``export`` and ``tune``.

Kept apart from :mod:`fracture_edge.cli` so that ``fracture-edge --help`` imports neither torch
nor TensorFlow: each handler imports its stage when it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from edge_app.errors import UsageError
from train.split_scoring import DEFAULT_DATA, DEFAULT_SPLIT


def _export(args: argparse.Namespace) -> int:
    from compress.export import export_bundle, export_onnx
    from edge_app.files import check_output
    from train.checkpoints import load_checkpoint

    inputs = [args.checkpoint]
    check_output(args.out, inputs, args.overwrite, folder=args.format == "tflite", what="export")
    if args.format == "onnx":
        net, card, config = load_checkpoint(args.checkpoint)
        size = args.input_size or config.input_size
        path = export_onnx(net, args.out, size, batch_size=args.batch)
        print(f"wrote {path} (input 1×1×{size}×{size}, opset 17)")
        return 0
    mode = "float32"
    for flag, name in (("fp16", "float16"), ("dynamic_int8", "dynamic_int8"), ("int8", "int8")):
        if getattr(args, flag):
            mode = name
    if args.int8 and args.int8_io:
        mode = "int8_io"
    result = export_bundle(
        args.checkpoint,
        args.out,
        mode=mode,
        split=None if args.no_evaluation else args.split,
        data=None if args.no_evaluation else args.data,
        input_size=args.input_size,
        calibration_images=args.calibration_images,
        batch_variant=args.batch if args.batch > 1 else None,
        threads=args.threads,
        command=shlex.join(["fracture-edge", *sys.argv[1:]]),
    )
    card = result.card
    summary = {
        "bundle": str(result.bundle),
        "quantization": card["quantization"],
        "input_size": card["preprocessing"]["input_size"],
        "model_bytes": card["model_bytes"],
        "model_sha256": card["model_sha256"],
    }
    if "metrics" in card:
        summary["test_auroc"] = card["metrics"]["test_auroc"]
        summary["test_auroc_ci95"] = card["metrics"]["test_auroc_ci95"]
        summary["parity"] = card["parity"]
    print(json.dumps(summary, indent=1))
    return 0


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    export = verbs.add_parser(
        "export",
        help="checkpoint → ONNX → TFLite bundle (model.tflite + model_card.json)",
        description="Export a checkpoint through ONNX (opset 17) and onnx2tf to TFLite, with the "
        "class-activation map as a second output. int8 is calibrated on training films, and "
        "the bundle's metrics, temperature, operating points and parity checks are measured on "
        "the exported file itself, on the original validation and test films of --split (read "
        "as the app reads them, the path bench uses). The card is written once, here.",
    )
    export.add_argument("checkpoint", help="checkpoint folder (model.safetensors + card)")
    export.add_argument("--format", choices=("tflite", "onnx"), default="tflite")
    export.add_argument("--out", required=True, help="bundle folder (tflite) or .onnx file")
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing bundle folder or file"
    )
    quant = export.add_mutually_exclusive_group()
    quant.add_argument("--fp16", action="store_true", help="float16 weights")
    quant.add_argument(
        "--dynamic-int8", action="store_true", help="dynamic-range int8 (weights only)"
    )
    quant.add_argument(
        "--int8", action="store_true", help="full-integer int8, calibrated on training images"
    )
    export.add_argument(
        "--int8-io", action="store_true", help="with --int8: int8 input and output tensors too"
    )
    export.add_argument(
        "--split", default=str(DEFAULT_SPLIT), help="split CSV (default: %(default)s)"
    )
    export.add_argument("--data", default=str(DEFAULT_DATA), help="FracAtlas root of the films")
    export.add_argument(
        "--no-evaluation",
        action="store_true",
        help="float modes only, no scoring: the bundle keeps the checkpoint's validation points",
    )
    export.add_argument("--input-size", type=int, help="export resolution (default: trained)")
    export.add_argument("--calibration-images", type=int, default=200)
    export.add_argument(
        "--batch", type=int, default=1, help="also write model_b<N>.tflite for benchmarks"
    )
    export.add_argument("--threads", type=int, default=2, help="LiteRT threads for scoring")
    export.set_defaults(handler=_export)
    add_tune_parser(verbs)


def _tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compress.export import export_bundle
    from compress.tune import (
        TuneSettings,
        open_study,
        optimise,
        parse_enqueue,
        remeasure,
        select,
        teacher_references,
        write_report,
    )

    settings = TuneSettings(
        cache=args.cache,
        students=args.students or [],
        out=args.out,
        study=args.study,
        storage=args.storage,
        finetune_epochs=args.finetune_epochs,
        finetune_limit=args.finetune_limit,
        teacher_logits=args.teacher_logits,
        calibration_images=args.calibration_images,
        latency_runs=args.latency_runs,
        seed=args.seed,
        heartbeat_s=args.heartbeat_s,
    )
    for name in ("sizes", "prune_ratios", "modes"):
        if getattr(args, name):
            setattr(settings, name, getattr(args, name))
    if args.enqueue:
        study = open_study(settings, create=False)
        for spec in args.enqueue:
            study.enqueue_trial(parse_enqueue(spec), skip_if_exists=True)
        print(f"enqueued {len(args.enqueue)} trials; the next workers run them first")
    if args.trials > 0:
        if not args.students or not args.cache:
            raise UsageError("a search needs --cache and --students")
        study = optimise(settings, args.trials)
    else:
        study = open_study(settings, create=False)
    if args.remeasure:
        measured = remeasure(study)
        print(f"re-measured the latency of {len(measured)} trials (median of 5 p50s, 1 thread)")
    chosen = None
    if args.max_latency_ms is not None or args.max_size_mb is not None or args.bundle:
        chosen = select(study, args.max_latency_ms, args.max_size_mb)
        print(f"chosen: trial {chosen.number} {chosen.params} → {chosen.values}")
    teachers = teacher_references(args.teachers_logits)
    files = write_report(study, Path(args.out) / args.study, teachers, chosen)
    print(f"report: {files['markdown']}, {files['plot']}")
    if args.bundle:
        result = export_bundle(
            chosen.user_attrs["checkpoint"],
            args.bundle,
            mode=chosen.params["mode"],
            split=args.split,
            data=args.data,
            input_size=int(chosen.params["input_size"]),
            calibration_images=settings.calibration_images,
            command=shlex.join(["fracture-edge", *sys.argv[1:]]),
            selection={
                "study": args.study,
                "trial": chosen.number,
                "params": chosen.params,
                "constraints": {
                    "max_latency_ms": args.max_latency_ms,
                    "max_size_mb": args.max_size_mb,
                },
                "search_values": dict(
                    zip(("val_auroc", "latency_p50_ms", "size_mb"), chosen.values, strict=True)
                ),
            },
        )
        metrics = result.card["metrics"]
        print(f"bundle: {result.bundle} (test AUROC {metrics['test_auroc']})")
    return 0


def add_tune_parser(verbs: argparse._SubParsersAction) -> None:
    tune = verbs.add_parser(
        "tune",
        help="Optuna search: AUROC vs latency vs size of the exported .tflite",
        description="Multi-objective Optuna search over student, input size, pruning ratio, "
        "quantisation mode (and KD temperature/alpha when fine-tuning), every objective "
        "measured on the exported TFLite file. Resumable; several workers share one study "
        "through --storage (a PostgreSQL or MySQL URL across machines).",
    )
    tune.add_argument("--cache", help="image cache (calibration, fine-tuning, validation)")
    tune.add_argument(
        "--split", default=str(DEFAULT_SPLIT), help="with --bundle: the films it is scored on"
    )
    tune.add_argument("--data", default=str(DEFAULT_DATA), help="with --bundle: FracAtlas root")
    tune.add_argument("--students", nargs="+", help="trained student checkpoint folders")
    tune.add_argument("--trials", type=int, default=10, help="trials for this worker (0: none)")
    tune.add_argument("--study", default="fracture-edge", help="study name")
    tune.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out)")
    tune.add_argument(
        "--heartbeat-s",
        type=int,
        default=60,
        help="worker heartbeat (s); a trial whose worker stops beating for three intervals is "
        "marked FAIL by the next worker (0: off)",
    )
    tune.add_argument("--out", default="runs/tune")
    tune.add_argument("--sizes", type=int, nargs="+", help="input sizes (default 160…320)")
    tune.add_argument("--prune-ratios", type=float, nargs="+", help="default 0…0.5")
    tune.add_argument(
        "--modes",
        nargs="+",
        choices=("float32", "float16", "dynamic_int8", "int8", "int8_io"),
        help="quantisation modes (default float16 dynamic_int8 int8)",
    )
    tune.add_argument("--finetune-epochs", type=int, default=0, help="KD fine-tune epochs")
    tune.add_argument("--finetune-limit", type=int, default=800, help="images per fine-tune")
    tune.add_argument("--teacher-logits", help="FILE.csv:COLUMN for the KD fine-tune")
    tune.add_argument("--teachers-logits", help="logits CSV whose teacher_* columns are plotted")
    tune.add_argument("--calibration-images", type=int, default=100)
    tune.add_argument("--latency-runs", type=int, default=40)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument(
        "--enqueue",
        action="append",
        metavar="K=V,...",
        help="queue a configuration to try first, e.g. "
        "student=NAME,input_size=192,prune_ratio=0.1,mode=int8 (repeatable)",
    )
    tune.add_argument(
        "--remeasure",
        action="store_true",
        help="time every trial's .tflite again (run on a quiet machine) before choosing",
    )
    tune.add_argument("--max-latency-ms", type=float, help="constraint for the choice")
    tune.add_argument("--max-size-mb", type=float, help="constraint for the choice")
    tune.add_argument("--bundle", help="export the chosen trial as a bundle into this folder")
    tune.set_defaults(handler=_tune)
