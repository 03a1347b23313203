"""Pooled features of every block of a frozen backbone, read once per film and cached.

Feature extraction is what a frozen-backbone recipe costs on a 2-core CPU (a 448-px Lite0
forward pass is most of a probe's time), so every recipe that keeps the backbone frozen reads
its features from here instead of running the backbone again:

    fracture-edge features ../shared/data/fracatlas --split splits/X.csv \\
        --backbone tf_efficientnet_lite0 --size 448 --out cache/features

One forward pass per film gives the global average of each block's output (EfficientNet:
the seven stages, then the 1×1 head), and the global max of the last two maps; the layout
(which columns are which tap) is stored beside the numbers, so a probe can pick any subset of
taps, e.g. the stride-16 stage plus the head, which is exactly what
:class:`train.models.FractureNet` with ``feature_taps`` computes in one graph.

Films are read with the app's own reader and preprocessing (:func:`edge_app.preprocess`), so a
probe fitted here is the probe the exported bundle runs. The cache is an ``.npz`` per
``(backbone, size, images)`` holding ``files``, ``features`` (float32) and ``layout``, written
atomically every few hundred films, so an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app._optional import require
from edge_app.preprocess import preprocess
from edge_app.radiograph import load_radiograph
from train.registry import preprocessing_for

torch = require("torch", "extract frozen features")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tap:
    """Columns ``[start, stop)`` of the cached vector: ``pool`` of ``block``'s output."""

    block: str
    pool: str
    start: int
    stop: int
    stride: int


def block_maps(backbone, inputs) -> list[tuple[str, int, object]]:
    """(name, stride, map) of every stage of a timm EfficientNet / MobileNet, then the head."""
    x = backbone.bn1(backbone.conv_stem(inputs))
    maps = []
    for index, stage in enumerate(backbone.blocks):
        x = stage(x)
        maps.append((f"block{index}", inputs.shape[-1] // x.shape[-1], x))
    head = backbone.bn2(backbone.conv_head(x))
    maps.append(("head", inputs.shape[-1] // head.shape[-1], head))
    return maps


def pooled_vector(maps) -> tuple[object, list[Tap]]:
    """Average of every map, plus the max of the last two; and the layout of the columns."""
    columns, taps, start = [], [], 0
    pooled = [(name, "avg", stride, m.mean((2, 3))) for name, stride, m in maps]
    pooled += [(name, "max", stride, m.amax((2, 3))) for name, stride, m in maps[-2:]]
    for name, pool, stride, values in pooled:
        columns.append(values)
        taps.append(Tap(name, pool, start, start + values.shape[1], stride))
        start += values.shape[1]
    return torch.cat(columns, 1), taps


@dataclass
class FeatureBank:
    files: list[str]
    features: np.ndarray
    taps: list[Tap]
    meta: dict

    def select(self, taps: Sequence[str], files: Sequence[str] | None = None) -> np.ndarray:
        """Columns of the named taps (``"block4:avg"``, ``"head:avg"``...), rows in ``files``."""
        by_name = {f"{t.block}:{t.pool}": t for t in self.taps}
        unknown = [t for t in taps if t not in by_name]
        if unknown:
            raise ValueError(f"unknown taps {unknown}; the bank has {sorted(by_name)}")
        columns = np.concatenate([np.arange(by_name[t].start, by_name[t].stop) for t in taps])
        rows = self.features
        if files is not None:
            index = {name: i for i, name in enumerate(self.files)}
            missing = [f for f in files if f not in index]
            if missing:
                raise KeyError(f"{len(missing)} films not in the bank, e.g. {missing[:3]}")
            rows = rows[[index[f] for f in files]]
        return rows[:, columns]


def read_bank(path: str | Path) -> FeatureBank:
    with np.load(path) as archive:
        meta = json.loads(str(archive["meta"]))
        taps = [Tap(**t) for t in meta.pop("taps")]
        return FeatureBank(archive["files"].tolist(), archive["features"], taps, meta)


def _write_bank(path: Path, files, features, taps, meta) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    payload = dict(meta, taps=[t.__dict__ for t in taps])
    with open(temporary, "wb") as handle:
        np.savez(
            handle,
            files=np.array(files),
            features=np.asarray(features, np.float32),
            meta=np.array(json.dumps(payload)),
        )
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def extract_bank(
    backbone_name: str,
    size: int,
    films: Sequence[tuple[str, Path]],
    out: str | Path,
    batch_size: int = 8,
    flip: bool = False,
    keep_map: str | None = None,
) -> FeatureBank:
    """Extract (or finish extracting) the bank of ``films`` (``(key, path)`` pairs) to ``out``.

    ``flip=True`` reads each film mirrored left-right (a second bank for flip averaging).
    ``keep_map="block5"`` also keeps that block's whole output map (float16, in the order of
    ``films``) in ``OUT.block5.npy``: the input of a fine-tune of the blocks above it
    (:mod:`train.top_finetune`), which then never runs the frozen part again.
    """
    from train.models import create_model

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_files: list[str] = []
    done_rows: list[np.ndarray] = []
    taps: list[Tap] = []
    placed: list[str] = []  # rows of the kept-map file so far
    if out.is_file():
        bank = read_bank(out)
        done_files, done_rows, taps = bank.files, list(bank.features), bank.taps
        placed = bank.meta.get("map_files", [])
    done = set(done_files)
    todo = [(key, path) for key, path in films if key not in done]
    meta = {"backbone": backbone_name, "size": size, "flip": flip, "init": "offline ImageNet"}
    if keep_map:
        # rows of the map file: the films already placed there, then the new ones
        known = set(placed)
        meta.update(map=keep_map, map_files=placed + [k for k, _ in films if k not in known])
    if not todo:
        return read_bank(out)
    model = create_model(backbone_name, pretrained="offline").eval()
    config = preprocessing_for(backbone_name, "offline", size)
    kept = None
    if keep_map:
        kept = _map_store(out, keep_map, model.backbone, size, len(meta["map_files"]))
    position = {key: i for i, key in enumerate(meta.get("map_files", []))}
    started, last_write = time.monotonic(), time.monotonic()
    with torch.inference_mode():
        for begin in range(0, len(todo), batch_size):
            chunk = todo[begin : begin + batch_size]
            inputs = []
            for _, path in chunk:
                pixels = load_radiograph(path).pixels
                if flip:
                    pixels = pixels[:, ::-1]
                inputs.append(preprocess(pixels, config)[0])
            batch = torch.from_numpy(np.stack(inputs)).unsqueeze(1)
            maps = block_maps(model.backbone, batch)
            vectors, taps = pooled_vector(maps)
            if kept is not None:
                chosen = dict((name, m) for name, _, m in maps)[keep_map].half().numpy()
                for (key, _), one in zip(chunk, chosen, strict=True):
                    kept[position[key]] = one
            done_files += [key for key, _ in chunk]
            done_rows += list(vectors.numpy())
            if time.monotonic() - last_write > 60 or begin + batch_size >= len(todo):
                if kept is not None:
                    kept.flush()  # the maps first: the bank's file list says what is complete
                _write_bank(out, done_files, np.stack(done_rows), taps, meta)
                last_write = time.monotonic()
                rate = (begin + len(chunk)) / (time.monotonic() - started)
                logger.info(
                    "%s@%d: %d / %d films (%.1f films/s)",
                    backbone_name,
                    size,
                    begin + len(chunk),
                    len(todo),
                    rate,
                )
    return read_bank(out)


def map_path(out: str | Path, block: str) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.{block}.npy")


def _map_store(out: Path, block: str, backbone, size: int, count: int):
    path = map_path(out, block)
    if path.is_file():
        stored = np.load(path, mmap_mode="r+")
        if len(stored) >= count:
            return stored
        # more films than the file has rows: a longer file, the rows so far copied first
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        grown = np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.float16, shape=(count, *stored.shape[1:])
        )
        grown[: len(stored)] = stored
        grown.flush()
        del grown, stored
        temporary.replace(path)
        return np.load(path, mmap_mode="r+")
    with torch.inference_mode():
        probe = dict((n, m) for n, _, m in block_maps(backbone, torch.zeros(1, 1, size, size)))
    if block not in probe:
        raise ValueError(f"no block {block!r}; the backbone has {sorted(probe)}")
    shape = (count, *probe[block].shape[1:])
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)


def read_maps(out: str | Path, files: Sequence[str]) -> np.ndarray:
    """The kept maps of ``files`` (float16, memory-mapped rows gathered into an array)."""
    bank = read_bank(out)
    block = bank.meta.get("map")
    if not block:
        raise ValueError(f"{out} kept no maps (extract it with keep_map)")
    complete = set(bank.files)
    missing = [f for f in files if f not in complete]
    if missing:
        raise KeyError(f"{len(missing)} films have no complete map in {out}, e.g. {missing[:3]}")
    position = {key: i for i, key in enumerate(bank.meta["map_files"])}
    stored = np.load(map_path(out, block), mmap_mode="r")
    return np.stack([stored[position[f]] for f in files])


def bank_taps(path, backbone: str, size: int, taps, files: Sequence[str]) -> np.ndarray:
    """A model's pooled features (global average of each of its ``feature_taps``, in order)
    read from a bank of the original films, after checking the bank is this backbone at this
    size, not mirrored: an LP step fitted here is the head of the model the app runs."""
    from edge_app.errors import UsageError

    bank = read_bank(path)
    if (bank.meta["backbone"], bank.meta["size"]) != (backbone, size) or bank.meta.get("flip"):
        raise UsageError(
            f"{path} holds {bank.meta['backbone']}@{bank.meta['size']} features; this run "
            f"needs {backbone}@{size} (not mirrored)"
        )
    return bank.select([f"{t}:avg" for t in taps], files)
