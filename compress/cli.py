"""The compress verbs of ``fracture-edge``: ``export`` and ``tune``.

Kept apart from :mod:`fracture_edge.cli` so that ``fracture-edge --help`` imports neither torch
nor TensorFlow: each handler imports its stage when it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def _export(args: argparse.Namespace) -> int:
    from compress.export import export_bundle, export_onnx
    from train.checkpoints import load_checkpoint

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
        cache_dir=args.cache,
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
        "class-activation map as a second output. With --cache, int8 is calibrated on training "
        "images and the bundle's metrics, operating points and parity checks are measured on "
        "the exported file itself.",
    )
    export.add_argument("checkpoint", help="checkpoint folder (model.safetensors + card)")
    export.add_argument("--format", choices=("tflite", "onnx"), default="tflite")
    export.add_argument("--out", required=True, help="bundle folder (tflite) or .onnx file")
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
    export.add_argument("--cache", help="image cache: calibration, metrics and parity checks")
    export.add_argument("--input-size", type=int, help="export resolution (default: trained)")
    export.add_argument("--calibration-images", type=int, default=200)
    export.add_argument(
        "--batch", type=int, default=1, help="also write model_b<N>.tflite for benchmarks"
    )
    export.add_argument("--threads", type=int, default=2, help="LiteRT threads for scoring")
    export.set_defaults(handler=_export)
