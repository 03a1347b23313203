"""The benchmark verbs of ``fracture-edge``: ``bench``, ``bench-compare`` and ``measure WHAT``
(the one-off measurements behind the docs). Kept apart from :mod:`fracture_edge.cli` so that
``fracture-edge --help`` imports neither torch nor LiteRT: each handler imports its harness when
it runs. Errors are not caught here: :func:`fracture_edge.cli.main` maps them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_app.errors import InputPathError, UsageError
from edge_app.site_calibration import DEFAULT_MIN_FRACTURED, DEFAULT_MIN_UNFRACTURED

SPEC_HELP = (
    "artifacts to benchmark (default: 'default'): tflite:BUNDLE_DIR, torch:CHECKPOINT_DIR "
    "(plus a CUDA row when CUDA is there), onnx:CHECKPOINT_DIR, arch:NAME@SIZE (random "
    "weights: latency and size only), logits:CSV:COLUMN (accuracy only), or 'default' for "
    "every models/*/ bundle, the four student checkpoints, arch:vgg16_bn@224, "
    "arch:resnet50@224, arch:custom_cnn@224 and the four teacher logits columns"
)


def _bench(args: argparse.Namespace) -> int:
    import time

    from benchmarks.bench import BenchConfig, run_bench
    from benchmarks.images import DEFAULT_DATA, DEFAULT_SPLIT
    from edge_app.files import check_output

    out = args.out or str(Path("benchmarks", "reports", time.strftime("%Y-%m-%d")))
    protected = [p for p in (args.split, args.data, args.external, args.labels) if p]
    check_output(out, protected, args.overwrite, folder=True, what="benchmark report")
    config = BenchConfig(
        models=args.models,
        out=out,
        split=args.split or str(DEFAULT_SPLIT),
        data=args.data or str(DEFAULT_DATA),
        external=args.external,
        labels=args.labels,
        group_column=args.group_column,
        limit=args.limit,
        repeats=args.repeats,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        heatmap_reference=args.heatmap_reference,
        heatmap_images=args.heatmap_images,
        speedup_reference=args.speedup_reference,
        resamples=args.resamples,
        seed=args.seed,
        note=args.note or "",
        cuda=args.cuda,
        latency_only=args.latency_only,
        latency=args.latency,
        shifts=args.shifts,
        tta=args.tta,
        calibrate=args.calibrate,
        calibration_folds=args.calibration_folds,
        min_fractured=args.min_fractured,
        min_unfractured=args.min_unfractured,
        **({"shift_seed": args.shift_seed} if args.shift_seed is not None else {}),
    )
    report = run_bench(config)
    for row in report["rows"]:
        auroc = (row["accuracy"] or {}).get("auroc")
        latency = (row["latency"] or {}).get(str(config.threads[0]), {}).get("p50_ms")
        print(
            f"{row['name'][:50]:<50} AUROC {auroc if auroc is not None else 'n/a':<7} "
            f"p50 {latency if latency is not None else 'n/a'} ms ({config.threads[0]} thr)"
        )
    for row in report["rows"]:
        if row["site"]:
            site = row["site"]
            low, high = site["auroc_ci95"]
            print(
                f"{row['name'][:50]:<50} site: AUROC≈ {site['auroc']} [{low}, {high}] over "
                f"{site['groups']} groups ({site['fracture_films']} fracture, "
                f"{site['unannotated_films']} unannotated films)"
            )
    for row in report["rows"]:
        if row["shifts"]:
            table = row["shifts"]
            print(
                f"{row['name'][:50]:<50} shifts: clean AUROC {table['clean_auroc']}, "
                f"mean drop {table['mean_drop']} over {len(table['shifts'])} shifts"
            )
    if report.get("site_calibration"):
        from benchmarks.site_calibration import summary_line

        for table in report["site_calibration"].values():
            print(summary_line(table))
    print(f"report: {config.out}/report.md\njson:   {config.out}/report.json")
    print(f"wall time: {report['wall_s']} s")
    status = 0
    for error in report["errors"]:
        print(f"fracture-edge bench: error: {error}")
        status = 1
    if args.compare:
        from benchmarks.compare import compare_reports, format_comparison, load_report

        # an unusable --compare report raises ReportFileError: exit 2 (the report is written)
        entries = compare_reports(load_report(args.compare), report, args.tolerance)
        print(format_comparison(entries, args.tolerance))
        status = max(status, int(any(entry["flagged"] for entry in entries)))
    return status


def add_bench_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``fracture-edge bench`` to the top-level subparsers."""
    bench = verbs.add_parser(
        "bench",
        help="accuracy, size, latency, memory and heatmaps of every artifact on the same images",
        description="Score every artifact on the split's val and test images (originals through "
        "the shared preprocessing), choose temperature and operating points on val, measure on "
        "test; time each artifact in its own child process; write report.md, report.json and "
        "plots. With --external DIR --labels CSV, score a labelled folder with each card's own "
        "thresholds instead. See docs/benchmarks.md.",
    )
    bench.add_argument("--split", help="split CSV (default: splits/fracatlas-bd42f929f115.csv)")
    bench.add_argument("--data", help="FracAtlas root (default: ../shared/data/fracatlas)")
    bench.add_argument("--models", nargs="+", action="extend", metavar="SPEC", help=SPEC_HELP)
    bench.add_argument("--out", help="output folder (default: benchmarks/reports/YYYY-MM-DD)")
    bench.add_argument(
        "--overwrite", action="store_true", help="write into an existing, non-empty --out"
    )
    bench.add_argument(
        "--limit", type=int, help="quick run: a label-stratified N images per split (val, test)"
    )
    bench.add_argument("--repeats", type=int, default=5, help="latency repeats (median; 5)")
    bench.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="default: 1 2")
    bench.add_argument("--runs", type=int, default=50, help="timed calls per repeat (50)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed calls per repeat (10)")
    bench.add_argument(
        "--heatmap-reference",
        metavar="CHECKPOINT",
        help="torch checkpoint whose Grad-CAM the bundles' CAM is compared with (default: each "
        "bundle card's source_checkpoint when it is on disk)",
    )
    bench.add_argument(
        "--heatmap-images", type=int, default=100, help="test images with boxes to score (100)"
    )
    bench.add_argument(
        "--speedup-reference",
        default="arch:vgg16_bn@224",
        metavar="SPEC",
        help="the row speed-ups are relative to (default: arch:vgg16_bn@224)",
    )
    bench.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (2000)")
    bench.add_argument("--seed", type=int, default=0, help="seed of --limit and the bootstrap")
    bench.add_argument("--external", metavar="DIR", help="score a labelled folder instead")
    bench.add_argument("--labels", metavar="CSV", help="with --external: file,fracture[,boxes]")
    bench.add_argument(
        "--group-column",
        metavar="NAME",
        help="with --external: the labels CSV column whose films belong together (copies of one "
        "picture, one patient); AUROC≈'s CI resamples whole groups (default: 'source' when the "
        "CSV has it, else each film its own group)",
    )
    bench.add_argument(
        "--cuda",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add CUDA rows for torch checkpoints and architectures when CUDA is available "
        "(default: yes)",
    )
    bench.add_argument(
        "--latency-only",
        action="store_true",
        help="no images: size, latency and memory of the artifacts only (e.g. on a GPU machine "
        "or a device without the data)",
    )
    bench.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure latency and memory in child processes (default: yes; --no-latency for a "
        "quick accuracy or --shifts run)",
    )
    bench.add_argument(
        "--tta",
        action="store_true",
        help="score TFLite bundles with horizontal-flip test-time augmentation (the mean of "
        "the image's and its mirror's logits and maps; two invokes per image)",
    )
    bench.add_argument(
        "--shifts",
        action="store_true",
        help="also score the test images under ten seeded acquisition shifts (exposure, "
        "contrast, noise, blur, JPEG q20, half resolution, collimation, burned-in text, 90° "
        "rotation, inverted polarity): AUROC per shift, drop and mean drop",
    )
    bench.add_argument(
        "--shift-seed",
        type=int,
        help="base seed of the shifts' parameters (default: benchmarks.shifts."
        "DEFAULT_SHIFT_SEED, 20261130)",
    )
    bench.add_argument(
        "--calibrate",
        type=int,
        metavar="K",
        help="with --external: calibrate each artifact to the site on K labelled films "
        "(stratified) and score the other films before and after, over --calibration-folds "
        "draws (docs/calibration.md)",
    )
    bench.add_argument(
        "--calibration-folds", type=int, default=10, help="draws for --calibrate (10)"
    )
    bench.add_argument(
        "--min-fractured",
        type=int,
        default=DEFAULT_MIN_FRACTURED,
        help=f"--calibrate refuses fewer fractured films among the K "
        f"(default {DEFAULT_MIN_FRACTURED}, as calibrate)",
    )
    bench.add_argument(
        "--min-unfractured",
        type=int,
        default=DEFAULT_MIN_UNFRACTURED,
        help=f"--calibrate refuses fewer unfractured films among the K "
        f"(default {DEFAULT_MIN_UNFRACTURED}, as calibrate)",
    )
    bench.add_argument("--note", help="free text for the report (e.g. what else was running)")
    bench.add_argument(
        "--compare",
        metavar="OTHER_REPORT_JSON",
        help="after the run, compare its speed-ups with an earlier report.json",
    )
    bench.add_argument(
        "--tolerance", type=float, default=0.05, help="--compare flags beyond this (0.05)"
    )
    bench.set_defaults(handler=_bench)


# --------------------------------------------------------------------------- bench-compare


def _bench_compare(args: argparse.Namespace) -> int:
    from benchmarks.compare import compare_reports, format_comparison, load_report, statistic

    old, new = load_report(args.old), load_report(args.new)
    entries = compare_reports(old, new, args.tolerance, args.p50)
    print(f"speed-ups: {statistic(new, args.p50)}")
    print(format_comparison(entries, args.tolerance))
    return 1 if any(entry["flagged"] for entry in entries) else 0


def add_bench_compare_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``fracture-edge bench-compare`` to the top-level subparsers."""
    from benchmarks.compare import TOLERANCE  # the standard library only: --help stays light

    parser = verbs.add_parser(
        "bench-compare",
        help="is a benchmark stable? compare the speed-ups of two bench reports",
        description="Print new speed-up / old speed-up per artifact and thread count of two "
        "report.json files of fracture-edge bench, and flag every ratio beyond ±5 % "
        "(--tolerance). Exit 0 when nothing is flagged, 1 when something is, 2 when a report "
        "is unusable.",
    )
    parser.add_argument("old", help="the earlier report.json")
    parser.add_argument("new", help="the later report.json")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="default 0.05")
    parser.add_argument(
        "--p50", action="store_true", help="compare the median-of-p50 speed-ups instead"
    )
    parser.set_defaults(handler=_bench_compare)


# --------------------------------------------------------------------------- measure


def _train_throughput(args: argparse.Namespace) -> int:
    if args.caches and len(args.caches) != len(args.sizes):
        raise UsageError(
            f"--caches takes one cache per --sizes entry: {len(args.sizes)} sizes, "
            f"{len(args.caches)} caches"
        )
    from benchmarks.train_throughput import markdown, measure
    from train.config import TrainConfig

    config = TrainConfig(
        cache=args.cache,
        out=str(Path(args.out) / "trainer"),
        backbone=args.backbone,
        pretrained=args.pretrained,
        batch_size=args.batch_size,
        augment_policy=args.policy,
        limit=args.limit,
        progress=False,
        tensorboard=False,
        threads=args.threads,
    )
    caches = dict(zip(args.sizes, args.caches or [args.cache] * len(args.sizes), strict=True))
    results = {"sizes": {}}
    for size, cache in caches.items():
        config.cache = cache
        part = measure(config, [size], tuple(args.augment), args.steps, args.rounds)
        results["sizes"].update(part["sizes"])
        results.update({k: v for k, v in part.items() if k != "sizes"})
    results["command"] = " ".join(["fracture-edge", *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results, args.backbone)
    (out / "train_throughput.md").write_text(table + "\n")
    print(table)
    return 0


def _add_train_throughput_parser(whats: argparse._SubParsersAction) -> None:
    parser = whats.add_parser(
        "train-throughput",
        help="training images/s of the real input pipeline against synthetic tensors",
        description="Interleaved rounds of training steps, in one process: synthetic tensors "
        "(the model's ceiling) and the real pipeline (cache → the app's letterbox → "
        "augmentation → normalisation) for each augmentation path; median images/s and each "
        "path's share of the ceiling.",
    )
    parser.add_argument("--cache", required=True, help="image cache (at the training size)")
    parser.add_argument(
        "--caches", nargs="+", help="one cache per --sizes entry (default: --cache for all)"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[160, 224])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--pretrained", default="offline")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--policy", default="default", help="augmentation policy")
    parser.add_argument(
        "--augment", nargs="+", default=["device", "albumentations"], help="paths to time"
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1000, help="cached images to load")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/reports/train-throughput")
    parser.set_defaults(handler=_train_throughput)


def _preprocess_parity(args: argparse.Namespace) -> int:
    from benchmarks.preprocess_parity import compare
    from edge_app.preprocess import PreprocessConfig

    if not Path(args.split).is_file():
        raise InputPathError(f"split file {args.split} does not exist")

    config = PreprocessConfig(args.input_size, args.mean, args.std, args.fill)
    result = compare(
        args.data, args.split, args.cache, config, args.on, args.limit, args.checkpoint
    )
    print(json.dumps(result, indent=1))
    return 0


def _add_preprocess_parity_parser(whats: argparse._SubParsersAction) -> None:
    parser = whats.add_parser(
        "preprocess-parity",
        help="how far training inputs read from a cache are from the app's inputs",
        description="For every film of a split: the app's preprocessing of the original file "
        "against the cached canvas through the training twin (no augmentation); intensity "
        "differences and, with --checkpoint, the logit change and both AUROCs.",
    )
    parser.add_argument("--data", default="../shared/data/fracatlas", help="FracAtlas root")
    parser.add_argument("--split", required=True, help="split CSV the cache was built from")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--input-size", type=int, required=True)
    parser.add_argument("--mean", type=float, default=0.5)
    parser.add_argument("--std", type=float, default=0.5)
    parser.add_argument("--fill", type=float, default=0.0)
    parser.add_argument("--on", default="val", help="which split's films (default: val)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--checkpoint", help="a checkpoint to measure the logit change with")
    parser.set_defaults(handler=_preprocess_parity)


def _batchnorm(args: argparse.Namespace) -> int:
    from benchmarks.batchnorm_recalibration import measure

    results = measure(
        args.checkpoint,
        args.cache,
        args.configs,
        args.val_images,
        args.train_images,
        on_result=lambda result: print(json.dumps(result), flush=True),
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _size_and_ratio(text: str) -> tuple[int, float]:
    """``SIZE:RATIO`` of ``measure batchnorm --configs``, e.g. ``192:0.1``."""
    size, separator, ratio = text.partition(":")
    try:
        parsed = int(size), float(ratio)
    except ValueError:
        parsed = None
    if not separator or parsed is None or parsed[0] < 16 or not 0 <= parsed[1] < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SIZE:RATIO (an input size ≥ 16 and a pruning ratio in [0, 1), "
            "e.g. 192:0.1)"
        )
    return parsed


def _add_batchnorm_parser(whats: argparse._SubParsersAction) -> None:
    parser = whats.add_parser(
        "batchnorm",
        help="validation AUROC before and after BatchNorm re-estimation (pruning, new size)",
        description="For each SIZE:RATIO, the checkpoint's torch AUROC on a fixed stratified "
        "sample of validation images as pruned/resized, and again after re-estimating "
        "BatchNorm statistics on un-augmented training images (docs/compress.md). One JSON "
        "line per configuration.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--cache", required=True, help="image cache (val and train rows)")
    parser.add_argument(
        "--configs",
        nargs="+",
        type=_size_and_ratio,
        default=[(224, 0.0), (160, 0.0), (192, 0.1), (192, 0.2)],
        metavar="SIZE:RATIO",
        help="input size and pruning ratio pairs (default: 224:0 160:0 192:0.1 192:0.2)",
    )
    parser.add_argument("--val-images", type=int, default=240, help="validation sample (240)")
    parser.add_argument("--train-images", type=int, default=256, help="re-estimation images (256)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.set_defaults(handler=_batchnorm)


def _input_pipeline(args: argparse.Namespace) -> int:
    from benchmarks.input_pipeline import measure

    text = json.dumps(measure(args.data, args.cache, args.images, args.repeats), indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


def _add_input_pipeline_parser(whats: argparse._SubParsersAction) -> None:
    parser = whats.add_parser(
        "input-pipeline",
        help="images/s of the cache and the originals through augmentation (one process)",
        description="Time the same training images two ways to a normalised, augmented 224² "
        "input: from the pre-letterboxed cache and from the original files through the shared "
        "loader and letterbox; median images/s over repeats and the cache/originals ratio "
        "(docs/data.md).",
    )
    parser.add_argument("--data", type=Path, required=True, help="root of the original images")
    parser.add_argument("--cache", type=Path, required=True, help="image cache built from it")
    parser.add_argument("--images", type=int, default=300, help="training images to time (300)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (median; 3)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.set_defaults(handler=_input_pipeline)


def _latency_probe(args: argparse.Namespace) -> int:
    from benchmarks.latency_probe import bursts, processes

    if args.probe == "bursts":
        result = bursts(args.bundle, args.arch, args.size, args.bursts, args.calls)
    else:
        result = processes(args.arch, args.size, args.processes)
    print(json.dumps(result, indent=1))
    return 0


def _add_latency_probe_parser(whats: argparse._SubParsersAction) -> None:
    from train.registry import BACKBONES  # a list of names: --help stays light

    parser = whats.add_parser(
        "latency-probe",
        help="is this machine quiet enough for latency ratios? (bursts, processes)",
        description="Two probes behind docs/benchmarks.md. bursts: one process alternates "
        "bursts of a TFLite bundle with single calls of a torch architecture and prints each "
        "burst's median. processes: fresh interpreters each time one torch architecture, with "
        "and without malloc on huge pages. Prints JSON; writes nothing.",
    )
    probes = parser.add_subparsers(dest="probe", required=True, metavar="PROBE")
    one = probes.add_parser("bursts", help="bundle bursts alternating with reference calls")
    one.add_argument("--bundle", default="models/fracture-lite0-int8", help="bundle folder")
    one.add_argument("--arch", default="vgg16_bn", choices=BACKBONES, help="the reference")
    one.add_argument("--size", type=int, default=224, help="the reference's input size")
    one.add_argument("--bursts", type=int, default=30)
    one.add_argument("--calls", type=int, default=30, help="bundle calls per burst")
    two = probes.add_parser("processes", help="fresh processes, with and without huge pages")
    two.add_argument("--arch", default="custom_cnn", choices=BACKBONES)
    two.add_argument("--size", type=int, default=224)
    two.add_argument("--processes", type=int, default=8, help="processes per setting")
    for probe in (one, two):
        probe.set_defaults(handler=_latency_probe)


def _runtime(args: argparse.Namespace) -> int:
    import json as json_module

    from benchmarks.runtime_targets import measure

    if args.json:
        from edge_app.files import check_output

        check_output(args.json, [args.bundle, args.images], args.overwrite, what="result JSON")
    result = measure(args.bundle, args.images, args.repeats, args.threads, args.runs, args.app)
    print(json_module.dumps(result["summary"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json_module.dumps(result, indent=1) + "\n")
    return 0


def _add_runtime_parser(whats: argparse._SubParsersAction) -> None:
    parser = whats.add_parser(
        "runtime",
        help="the runtime's targets: cold start, inference + heatmap + box p50, peak memory",
        description="Cold start to the first verdict (a new process; with --app the Kivy app "
        "under Xvfb), warm inference + heatmap + box latency per sample image, peak RSS.",
    )
    parser.add_argument("--bundle", type=Path, default=Path("models/fracture-lite0-int8"))
    parser.add_argument("--images", type=Path, default=Path("models/samples"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--app", action="store_true", help="also time the Kivy app under Xvfb")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    parser.set_defaults(handler=_runtime)


def _hostile_inputs(args: argparse.Namespace) -> int:
    import json as json_module

    from benchmarks.hostile_inputs import run

    def show(record: dict) -> None:
        print(json_module.dumps(record), flush=True)

    run(args.workdir, args.tree, args.mode, args.model, args.cap_gb, args.timeout, args.only,
        on_record=show)  # fmt: skip
    return 0


def _add_hostile_inputs_parser(whats: argparse._SubParsersAction) -> None:
    parser = whats.add_parser(
        "hostile-inputs",
        help="peak memory and time of reading hostile files, each in its own capped process",
        description="Writes each hostile file (bombs, FIFOs, truncated and blank films, ...) "
        "into --workdir once, then reads it in a fresh process under an address-space cap and "
        "prints one JSON line per file: outcome, seconds, peak RSS.",
    )
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tree", type=Path, default=Path.cwd(), help="checkout to run against")
    parser.add_argument("--mode", choices=("load", "predict"), default="load")
    parser.add_argument("--model", default="models/fracture-lite0-int8")
    parser.add_argument("--cap-gb", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these inputs (default: all)")
    parser.set_defaults(handler=_hostile_inputs)


def add_measure_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``fracture-edge measure WHAT`` to the top-level subparsers."""
    measure = verbs.add_parser(
        "measure",
        help="one-off measurements behind the docs: batchnorm, input-pipeline, latency-probe, "
        "train-throughput, preprocess-parity, runtime, hostile-inputs",
        description="The measurements the docs quote, each a sub-verb; fracture-edge bench is "
        "the benchmark itself.",
    )
    whats = measure.add_subparsers(dest="measure_verb", required=True, metavar="WHAT")
    _add_batchnorm_parser(whats)
    _add_input_pipeline_parser(whats)
    _add_latency_probe_parser(whats)
    _add_train_throughput_parser(whats)
    _add_preprocess_parity_parser(whats)
    _add_runtime_parser(whats)
    _add_hostile_inputs_parser(whats)
