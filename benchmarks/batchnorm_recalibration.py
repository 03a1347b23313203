"""What BatchNorm re-estimation buys after pruning or a new input size (validation AUROC).

For each (input size, pruning ratio): the student's torch AUROC on a fixed stratified sample of
validation images, as pruned/resized, and again after :func:`compress.prune.recalibrate_batchnorm`
on un-augmented training images. Same images, same run::

    fracture-edge measure batchnorm \\
        --checkpoint models/checkpoints/gpu-2026-11-27/student_tf_efficientnet_lite0_imagenet \\
        --cache cache/fracatlas-256 --configs 224:0 160:0 192:0.1 192:0.2 --json runs/bn.json
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def measure(
    checkpoint,
    cache,
    configs,
    val_images,
    train_images,
    seed=0,
    on_result: Callable[[dict], object] | None = None,
) -> list[dict]:
    """One result per ``(input size, pruning ratio)`` of ``configs``; ``on_result`` sees each
    as soon as it is measured (a configuration takes minutes)."""
    from compress.cache_inputs import cache_rows, calibration_sample, model_inputs
    from compress.export import LOGIT_OUTPUT, torch_outputs
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
        if on_result is not None:
            on_result(results[-1])
    return results
