"""Checkpoint folders: ``model.safetensors`` + ``model_card.json`` (+ ``config.yaml``).

:func:`load_checkpoint` is how every later stage (distillation, Grad-CAM, export, benchmarks)
rebuilds a model: architecture, heads and preprocessing all come from the card.

A pruned model (``compress.prune``) has a ``"pruning"`` section in its card. Its checkpoint holds
plain tensors like any other; loading builds the base architecture, gives each layer the shape of
its saved tensors, checks the recorded channel counts, then loads the weights. No module is
pickled, and loading needs no pruning library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_app._optional import require
from edge_app.card import read_card as read_checkpoint_card
from edge_app.card import write_card
from edge_app.errors import ModelCardError
from edge_app.preprocess import PreprocessConfig
from train.models import create_model, file_sha256, load_state_file

torch = require("torch", "load checkpoints")


def read_card(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's card, validated (:mod:`edge_app.card`)."""
    return read_checkpoint_card(folder, "checkpoint")


def load_checkpoint(folder: str | Path, device: str = "cpu"):
    """(model in eval mode, card, preprocessing) from a checkpoint folder; sha256 verified."""
    folder = Path(folder)
    card = read_card(folder)
    model = create_model(
        card["architecture"],
        aux_heads=card.get("aux_heads") or None,
        feature_taps=card.get("feature_taps") or None,
    )
    state = load_state_file(folder / "model.safetensors", card.get("weights_sha256"))
    state = {k: v.float() for k, v in state.items()}
    if card.get("pruning"):
        resize_to_state(model, state)
        check_pruned_channels(model, card["pruning"].get("channels", {}), folder)
        model.pruning = card["pruning"]
    model.load_state_dict(state)
    return model.eval().to(device), card, PreprocessConfig.from_card(card)


def resize_to_state(model, state: dict) -> None:
    """Give every conv, norm and linear layer of ``model`` the shapes of its tensors in ``state``.

    Structured pruning only removes whole channels, so a pruned network is the base network with
    smaller conv, BatchNorm and linear layers; the saved tensors say exactly how much smaller.
    """
    nn = torch.nn
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        tensors = {
            **dict(module.named_parameters(recurse=False)),
            **dict(module.named_buffers(recurse=False)),
        }
        shapes = {key: state[prefix + key].shape for key in tensors if prefix + key in state}
        if all(tensors[key].shape == shape for key, shape in shapes.items()):
            continue
        if isinstance(module, nn.modules.conv._ConvNd) and "weight" in shapes:
            out_channels, in_per_group = shapes["weight"][:2]
            if 1 < module.groups == module.in_channels:  # depthwise: channels and groups shrink
                module.groups = out_channels // (module.out_channels // module.groups)
            module.in_channels = in_per_group * module.groups
            module.out_channels = out_channels
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and "weight" in shapes:
            module.num_features = shapes["weight"][0]
        elif isinstance(module, nn.Linear) and "weight" in shapes:
            module.out_features, module.in_features = shapes["weight"]
        else:
            raise ModelCardError(
                f"Cannot resize {prefix or 'the model'} ({type(module).__name__}) to the saved "
                "shapes: structured pruning only shrinks conv, BatchNorm and linear layers."
            )
        for key, shape in shapes.items():
            value = tensors[key]
            resized = torch.empty(shape, dtype=value.dtype, device=value.device)
            is_parameter = isinstance(value, nn.Parameter)
            setattr(module, key, nn.Parameter(resized) if is_parameter else resized)
    model.num_features = model.fracture_head.in_features


def check_pruned_channels(model, channels: dict[str, int], folder: str | Path = "") -> None:
    """Every layer the card's pruning section names has the recorded number of output channels."""
    modules = dict(model.named_modules())
    for name, expected in channels.items():
        module = modules.get(name)
        actual = getattr(module, "out_channels", getattr(module, "out_features", None))
        if actual != expected:
            raise ModelCardError(
                f"{folder}: the card records {expected} output channels for {name!r}, the saved "
                f"weights give {actual}. The card and model.safetensors do not belong together."
            )


def write_checkpoint(folder: str | Path, state: dict, card: dict[str, Any]) -> Path:
    """Write weights and a card whose ``weights_sha256`` matches the written file."""
    save_file = require("safetensors.torch", "write checkpoints").save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(weights))
    write_card(folder, {**card, "weights_sha256": file_sha256(weights)}, "checkpoint")
    return folder


def cache_logits(folders, cache_dir: str | Path, splits=("val", "test"), batch_size: int = 64):
    """Each checkpoint's fracture logits on the cached images of ``splits`` (CPU, fp32).

    Returns (rows, {checkpoint name: logits}); the same format as a training run's logits CSV,
    so ``fracture-edge evaluate`` reads both.
    """

    from train.cache import cache_levels, load_cached_bank, read_cache_index, read_cache_meta
    from train.tensor_preprocess import preprocess_batch

    rows = [r for r in read_cache_index(cache_dir) if r["split"] in splits]
    bank = torch.from_numpy(load_cached_bank(cache_dir, rows)).unsqueeze(1)
    fill = float(read_cache_meta(cache_dir).get("fill", 0.0))
    levels = cache_levels(cache_dir)
    results = {}
    for folder in folders:
        model, card, preprocessing = load_checkpoint(folder)
        if abs(preprocessing.fill - fill) > 1e-9:
            raise ModelCardError(
                f"{folder} letterboxes with fill {preprocessing.fill}, {cache_dir} with {fill}"
            )
        outputs = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                canvases = bank[start : start + batch_size].float() / levels
                outputs.append(model(preprocess_batch(canvases, preprocessing)))
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
