"""What BatchNorm re-estimation buys after pruning or a new input size (validation AUROC).

For each (input size, pruning ratio): the student's torch AUROC on a fixed stratified sample of
validation images, as pruned/resized, and again after :func:`compress.prune.recalibrate_batchnorm`
on un-augmented training images. Same images, same run::

    python -m benchmarks.batchnorm_recalibration \\
        --checkpoint models/checkpoints/gpu-2026-11-27/student_tf_efficientnet_lite0_imagenet \\
        --cache cache/fracatlas-256 --configs 224:0 160:0 192:0.1 192:0.2 --json runs/bn.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def run(checkpoint, cache, configs, val_images, train_images, seed=0) -> list[dict]:
    from compress.export import (
        LOGIT_OUTPUT,
        cache_rows,
        calibration_sample,
        model_inputs,
        torch_outputs,
    )
    from compress.prune import prune_model, recalibrate_batchnorm
    from edge_app.preprocess import PreprocessConfig
    from train.checkpoints import load_checkpoint
    from train.metrics import auroc

    rows = cache_rows(cache, "val")
    rng = np.random.default_rng(seed)
    if val_images < len(rows):
        rows = [rows[i] for i in sorted(rng.choice(len(rows), val_images, replace=False))]
    labels = np.array([int(row["label"]) for row in rows])
    results = []
    for size, ratio in configs:
        net, card, preprocessing = load_checkpoint(checkpoint)
        config = PreprocessConfig(size, preprocessing.mean, preprocessing.std, preprocessing.fill)
        if ratio > 0:
            net = prune_model(net, ratio, size)
        images = model_inputs(cache, rows, config)
        before = auroc(labels, torch_outputs(net, images)[LOGIT_OUTPUT][:, 0])
        sample, _ = calibration_sample(cache, config, train_images, seed=seed + 1)
        recalibrate_batchnorm(net, sample.transpose(0, 3, 1, 2))
        after = auroc(labels, torch_outputs(net, images)[LOGIT_OUTPUT][:, 0])
        results.append(
            {
                "input_size": size,
                "prune_ratio": ratio,
                "val_auroc_as_is": round(float(before), 4),
                "val_auroc_recalibrated": round(float(after), 4),
                "val_images": len(rows),
                "recalibration_images": len(sample),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--configs", nargs="+", default=["224:0", "160:0", "192:0.1", "192:0.2"])
    parser.add_argument("--val-images", type=int, default=240)
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in args.configs]
    results = run(args.checkpoint, args.cache, configs, args.val_images, args.train_images)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
