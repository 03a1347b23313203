"""Checkpoint folders: ``model.safetensors`` + ``model_card.json`` (+ ``config.yaml``).

:func:`load_checkpoint` is how every later stage (distillation, Grad-CAM, export, benchmarks)
rebuilds a model: architecture, heads and preprocessing all come from the card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_app._optional import require
from edge_app.errors import ModelCardError
from edge_app.preprocess import PreprocessConfig
from train.models import create_model, file_sha256, load_state_file

torch = require("torch", "load checkpoints")


def read_card(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "model_card.json"
    if not path.is_file():
        raise ModelCardError(f"{folder} is not a checkpoint folder: it has no model_card.json")
    card = json.loads(path.read_text())
    for key in ("architecture", "preprocessing"):
        if key not in card:
            raise ModelCardError(f"{path} lacks '{key}'")
    return card


def load_checkpoint(folder: str | Path, device: str = "cpu"):
    """(model in eval mode, card, preprocessing) from a checkpoint folder; sha256 verified."""
    folder = Path(folder)
    card = read_card(folder)
    model = create_model(card["architecture"], aux_heads=card.get("aux_heads") or None)
    state = load_state_file(folder / "model.safetensors", card.get("weights_sha256"))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().to(device), card, PreprocessConfig.from_card(card)


def write_checkpoint(folder: str | Path, state: dict, card: dict[str, Any]) -> Path:
    """Write weights and a card whose ``weights_sha256`` matches the written file."""
    save_file = require("safetensors.torch", "write checkpoints").save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(weights))
    card = {**card, "weights_sha256": file_sha256(weights)}
    (folder / "model_card.json").write_text(json.dumps(card, indent=1))
    return folder


def cache_logits(folders, cache_dir: str | Path, splits=("val", "test"), batch_size: int = 64):
    """Each checkpoint's fracture logits on the cached images of ``splits`` (CPU, fp32).

    Returns (rows, {checkpoint name: logits}); the same format as a GPU run's logits CSV, so
    ``fracture-edge evaluate`` reads both.
    """

    from train.cache import load_cached_bank, read_cache_index
    from train.device_augment import resize_batch

    rows = [r for r in read_cache_index(cache_dir) if r["split"] in splits]
    bank = torch.from_numpy(load_cached_bank(cache_dir, rows)).unsqueeze(1)
    results = {}
    for folder in folders:
        model, card, preprocessing = load_checkpoint(folder)
        outputs = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                images = resize_batch(bank[start : start + batch_size], preprocessing.input_size)
                outputs.append(model((images - preprocessing.mean) / preprocessing.std))
        results[card.get("name") or Path(folder).name] = torch.cat(outputs).numpy()
    return rows, results


def write_logits_csv(path: str | Path, rows, logits: dict) -> Path:
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "split", "label", *logits])
        for index, row in enumerate(rows):
            writer.writerow(
                [
                    row["file"],
                    row["split"],
                    row["label"],
                    *[f"{values[index]:.5f}" for values in logits.values()],
                ]
            )
    return path
