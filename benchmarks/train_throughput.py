"""Training throughput: the real input pipeline against the model's own ceiling, in one run.

For each input size, one :class:`~train.trainer.Trainer` (its model, optimizer and batch size)
runs timed blocks of training steps, interleaved round by round so that a change of the shared
machine's speed hits every variant alike:

- ``synthetic``: random tensors already normalised, the same forward/backward/step (the ceiling);
- one row per augmentation path (``device``: batched on tensors; ``albumentations``: per image),
  each through the whole pipeline: cache bank → the app's letterbox (torch twin) → augmentation
  → normalisation → forward/backward/step.

Reported: images per second (median over rounds) and each path's share of the ceiling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from edge_app._optional import require

torch = require("torch", "measure training throughput")
logger = logging.getLogger(__name__)


def _synthetic_step(trainer, optimizer, batch_size: int, generator):
    size = trainer.preprocessing.input_size
    images = torch.rand(batch_size, 1, size, size, generator=generator)
    targets = (torch.rand(batch_size, generator=generator) < 0.2).float()
    inputs = trainer.model_inputs(images)
    from train.losses import supervised_loss

    with torch.autocast(**trainer.autocast):
        logits = trainer.model(inputs).float()
        loss = supervised_loss(trainer.config.imbalance, logits, targets, trainer.pos_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _real_step(trainer, optimizer, indices):
    loss = trainer.loss(trainer.model, indices)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(
    config,
    sizes: list[int],
    augment_paths: tuple[str, ...] = ("device", "albumentations"),
    steps: int = 12,
    rounds: int = 3,
    warmup: int = 2,
) -> dict[str, Any]:
    """Median images/s per (size, variant) and the share of the synthetic ceiling."""
    results: dict[str, Any] = {"config": {"steps": steps, "rounds": rounds}, "sizes": {}}
    for size in sizes:
        results["sizes"][str(size)] = _measure_size(
            replace(config, input_size=size), augment_paths, steps, rounds, warmup
        )
    results["threads"] = torch.get_num_threads()
    results["torch"] = torch.__version__
    return results


def _measure_size(config, augment_paths, steps: int, rounds: int, warmup: int) -> dict:
    from train.trainer import Trainer

    trainers = {path: Trainer(replace(config, augment=path)) for path in augment_paths}
    reference = trainers[augment_paths[0]]
    for trainer in trainers.values():  # one model for every variant: same weights, same cost
        trainer.model = reference.model
    optimizer = torch.optim.AdamW(reference.model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batches = {path: _endless_batches(trainer) for path, trainer in trainers.items()}

    def timed(variant: str, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            if variant == "synthetic":
                _synthetic_step(reference, optimizer, config.batch_size, generator)
            else:
                _real_step(trainers[variant], optimizer, next(batches[variant]))
        return count * config.batch_size / (time.perf_counter() - started)

    timings: dict[str, list[float]] = {"synthetic": [], **{p: [] for p in augment_paths}}
    reference.model.train()
    for variant in timings:
        timed(variant, warmup)
    for round_index in range(rounds):
        for variant in timings:
            timings[variant].append(timed(variant, steps))
            logger.info(
                "size %d round %d %s: %.1f img/s",
                config.input_size,
                round_index,
                variant,
                timings[variant][-1],
            )
    ceiling = float(np.median(timings["synthetic"]))
    return {
        variant: {
            "images_per_second": round(float(np.median(values)), 2),
            "rounds": [round(v, 2) for v in values],
            "share_of_ceiling": round(float(np.median(values)) / ceiling, 3),
        }
        for variant, values in timings.items()
    }


def _endless_batches(trainer):
    while True:
        yield from trainer.batches()


def markdown(results: dict[str, Any], backbone: str) -> str:
    lines = [
        f"| {backbone} | variant | images/s (median) | share of the synthetic ceiling |",
        "| --- | --- | --- | --- |",
    ]
    for size, variants in results["sizes"].items():
        for variant, row in variants.items():
            lines.append(
                f"| {size} px | {variant} | {row['images_per_second']:.1f} | "
                f"{100 * row['share_of_ceiling']:.0f} % |"
            )
    return "\n".join(lines)
