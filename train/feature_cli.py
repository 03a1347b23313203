"""``fracture-edge features``: fill a frozen backbone's feature bank (:mod:`train.feature_bank`).

    fracture-edge features ../shared/data/fracatlas --split splits/X.csv \\
        --backbone tf_efficientnet_lite0 --size 448 --out cache/features/fracatlas-lite0-448.npz
    fracture-edge features ../shared/data/site-b/images --labels ../shared/data/site-b/labels.csv \\
        --backbone tf_efficientnet_lite0 --size 448 --out cache/features/siteb-lite0-448.npz

A bank of another site's films is for *scoring* a probe only: nothing fitted may read it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from edge_app.errors import UsageError


def films_of(data: str | Path, split: str | None, labels: str | None) -> list[tuple[str, Path]]:
    """``(key, path)`` of every film of a split CSV (its ``relpath``) or a labels CSV (``file``)."""
    if (split is None) == (labels is None):
        raise UsageError("give exactly one of --split CSV (FracAtlas) or --labels CSV (a site)")
    data = Path(data)
    with open(split or labels, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if split:
        rows = [r for r in rows if r["split"] in ("train", "val", "test")]
        return [(r["file"], data / r["relpath"]) for r in rows]
    return [(r["file"], data / r["file"]) for r in rows]


def _features(args: argparse.Namespace) -> int:
    from train.feature_bank import extract_bank

    films = films_of(args.data, args.split, args.labels)
    if args.limit:
        films = films[: args.limit]
    bank = extract_bank(
        args.backbone,
        args.size,
        films,
        args.out,
        batch_size=args.batch_size,
        flip=args.flip,
        keep_map=args.keep_map,
    )
    print(f"{args.out}: {len(bank.files)} films × {bank.features.shape[1]} features")
    return 0


def _probe_search(args: argparse.Namespace) -> int:
    from edge_app._optional import require
    from train.probe_search import run_search

    plan = require("yaml", "read search plans").safe_load(Path(args.plan).read_text())
    if args.only:
        plan["candidates"] = {k: v for k, v in plan["candidates"].items() if k in args.only}
    results = run_search(plan, args.out)
    print((Path(args.out) / "probe-search.md").read_text(), end="")
    return 0 if results else 2


def _top_finetune(args: argparse.Namespace) -> int:
    import json

    from train.top_finetune import TopConfig, run_top_finetune, write_checkpoint

    config = TopConfig(
        epochs=args.epochs,
        lr=args.lr,
        head_lr=args.head_lr,
        seed=args.seed,
        alpha=args.alpha,
        temperature=args.temperature,
        start_block=args.start_block,
        threads=args.threads,
    )
    taps = tuple(args.taps)
    if args.choose == "site" and not (args.site_bank and args.site_labels):
        raise UsageError("--choose site needs --site-bank and --site-labels (or --choose val)")
    result = run_top_finetune(
        args.bank,
        args.split,
        taps,
        config,
        args.site_bank,
        args.site_labels,
        args.teacher_logits,
        score_test=args.score_test,
    )
    history = result["history"]
    key = "site_auroc" if args.choose == "site" else "val_auroc"
    best = max(history, key=lambda row: row[key])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "config": config.__dict__,
        "taps": list(taps),
        "linear_probe": result["linear_probe"],
        "bank": args.bank,
        "frozen_features": int(result["frozen_features"]),
        "history": history,
        "chosen_epoch": best["epoch"],
        "chosen_on": key,
        "teacher_logits": args.teacher_logits,
        "command": _top_command(args),
    }
    (out / "top_finetune.json").write_text(json.dumps(summary, indent=1))
    for row in history:
        print(json.dumps(row))
    print(f"chosen epoch {best['epoch']} by {key}")
    if args.checkpoint_cache:
        write_checkpoint(
            result["states"][best["epoch"]], taps, config, args.checkpoint_cache, out, summary
        )
    return 0


def _top_command(args: argparse.Namespace) -> str:
    """The command that reproduces this run, from the parsed flags (not sys.argv)."""
    import shlex

    words = ["fracture-edge", "top-finetune"]
    for name, value in sorted(vars(args).items()):
        if name in ("handler", "verb", "verbose") or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return shlex.join(words)


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    from train.registry import BACKBONES

    features = verbs.add_parser(
        "features",
        help="pooled per-block features of a frozen ImageNet backbone, cached per film",
    )
    features.add_argument("data", help="data root (FracAtlas) or a site's image folder")
    features.add_argument("--split", help="a FracAtlas split CSV (relpath column)")
    features.add_argument("--labels", help="a site's labels CSV (file column)")
    features.add_argument("--backbone", default="tf_efficientnet_lite0", choices=BACKBONES)
    features.add_argument("--size", type=int, default=448)
    features.add_argument("--flip", action="store_true", help="read every film mirrored")
    features.add_argument(
        "--keep-map", metavar="BLOCK", help="also keep BLOCK's whole map (e.g. block5), float16"
    )
    features.add_argument("--batch-size", type=int, default=8)
    features.add_argument("--limit", type=int, help="only the first N films (a smoke run)")
    features.add_argument("--out", required=True, help="the bank (.npz); resumed when present")
    features.set_defaults(handler=_features)

    search = verbs.add_parser(
        "probe-search",
        help="frozen-feature probes fitted on FracAtlas, ranked on another site (feature banks)",
    )
    search.add_argument("--plan", required=True, help="YAML: banks, site_banks, split, candidates")
    search.add_argument("--only", nargs="+", help="score only these candidates")
    search.add_argument("--out", required=True)
    search.set_defaults(handler=_probe_search)

    top = verbs.add_parser(
        "top-finetune",
        help="fine-tune the top blocks of a frozen Lite0 on a bank's kept maps (LP-FT, KD)",
    )
    top.add_argument("--bank", required=True, help="FracAtlas bank with kept block5 maps")
    top.add_argument("--split", required=True)
    top.add_argument("--taps", nargs="+", default=["block4", "head"])
    top.add_argument("--site-bank", help="a site's bank with kept maps: scored every epoch")
    top.add_argument("--site-labels", help="the site's labels CSV")
    top.add_argument("--teacher-logits", help="FILE.csv:COLUMN, cross-fitted on train")
    top.add_argument("--alpha", type=float, default=0.0, help="KD weight (0: none)")
    top.add_argument("--temperature", type=float, default=2.0)
    top.add_argument("--epochs", type=int, default=6)
    top.add_argument("--lr", type=float, default=3e-5)
    top.add_argument("--head-lr", type=float, default=3e-4)
    top.add_argument("--seed", type=int, default=0)
    top.add_argument("--start-block", type=int, default=6, choices=(6, 7))
    top.add_argument("--threads", type=int)
    top.add_argument("--choose", choices=("site", "val"), default="site")
    top.add_argument(
        "--score-test",
        action="store_true",
        help="score the split's test films every epoch: for the held-out-acquisition split only",
    )
    top.add_argument(
        "--checkpoint-cache",
        help="the image cache at the bank's size: write the chosen epoch as a checkpoint",
    )
    top.add_argument("--out", required=True)
    top.set_defaults(handler=_top_finetune)
