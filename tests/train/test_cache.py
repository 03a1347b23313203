"""Tests for train.cache on a tiny synthetic FracAtlas-like tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edge_app.preprocess import letterbox
from edge_app.radiograph import load_radiograph
from train.cache import (
    CACHE_COLUMNS,
    CacheConfig,
    build_cache,
    format_boxes,
    load_cached_image,
    parse_boxes,
    parse_outlines,
    read_cache_index,
)
from train.datasets import iter_fracatlas
from train.splits import EXCLUDED, SplitConfig, make_split, split_id

SIZE = 64
YOLO_BOX = (0.4, 0.6, 0.4, 0.4)  # corners (0.2, 0.4, 0.6, 0.8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_radiograph, fracatlas_tree, atlas_image):
    wide = make_radiograph(height=100, width=200, shape_seed=1, texture_seed=1)
    tall = make_radiograph(height=200, width=100, shape_seed=2, texture_seed=2)
    root = fracatlas_tree(
        tmp_path_factory.mktemp("atlas"),
        [
            atlas_image("wide.jpg", True, wide, yolo=[YOLO_BOX], flags={"hardware": 1}),
            atlas_image("tall.jpg", True, tall, regions=("leg",), yolo=[YOLO_BOX]),
            atlas_image("neg1.jpg", False, make_radiograph(100, 120, 3, 3), regions=("hip",)),
            atlas_image("neg2.jpg", False, make_radiograph(90, 90, 4, 4)),
            atlas_image("cut.jpg", False, make_radiograph(80, 80, 5, 5), regions=("shoulder",)),
        ],
    )
    samples = list(iter_fracatlas(root))
    rows = make_split(
        samples,
        {"truncated": ["cut.jpg"]},
        SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0),
        root=root,
    )
    out = tmp_path_factory.mktemp("cache")
    meta = build_cache(samples, rows, out, CacheConfig(size=SIZE), workers=1)
    return samples, rows, out, meta


def index_by_file(out):
    return {row["file"]: row for row in read_cache_index(out)}


def test_cache_holds_only_usable_images_as_square_jpegs(dataset):
    _, rows, out, _ = dataset
    assert {row.file for row in rows if row.split == EXCLUDED} == {"cut.jpg"}
    stored = sorted(path.name for path in (out / "images").iterdir())
    assert stored == ["neg1.jpg", "neg2.jpg", "tall.jpg", "wide.jpg"]
    for name in stored:
        with Image.open(out / "images" / name) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (SIZE, SIZE))


def test_index_columns_and_labels(dataset):
    _, rows, out, _ = dataset
    with open(out / "index.csv") as handle:
        assert handle.readline().strip() == ",".join(CACHE_COLUMNS)
    index = index_by_file(out)
    assert set(index) == {"wide.jpg", "tall.jpg", "neg1.jpg", "neg2.jpg"}
    split_rows = {row.file: row for row in rows}
    for name, entry in index.items():
        assert entry["split"] == split_rows[name].split
        assert int(entry["fold"]) == split_rows[name].fold
        assert int(entry["label"]) == split_rows[name].label
        assert entry["group"] == name
        assert entry["truncated"] == "0"
    assert {name: int(entry["label"]) for name, entry in index.items()} == {
        "wide.jpg": 1,
        "tall.jpg": 1,
        "neg1.jpg": 0,
        "neg2.jpg": 0,
    }
    assert (index["wide.jpg"]["region"], index["wide.jpg"]["hardware"]) == ("hand", "1")
    assert (index["tall.jpg"]["region"], index["tall.jpg"]["hardware"]) == ("leg", "0")
    assert (index["wide.jpg"]["original_width"], index["wide.jpg"]["original_height"]) == (
        "200",
        "100",
    )
    assert index["neg1.jpg"]["boxes"] == ""


def test_boxes_are_mapped_onto_the_canvas(dataset):
    _, _, out, _ = dataset
    index = index_by_file(out)
    # 200 × 100 → 64 × 32 centred vertically: x unchanged, y → 0.25 + y / 2.
    [wide_box] = parse_boxes(index["wide.jpg"]["boxes"])
    assert wide_box == pytest.approx((0.2, 0.25 + 0.4 / 2, 0.6, 0.25 + 0.8 / 2), abs=1e-5)
    # 100 × 200 → 32 × 64 centred horizontally: x → 0.25 + x / 2, y unchanged.
    [tall_box] = parse_boxes(index["tall.jpg"]["boxes"])
    assert tall_box == pytest.approx((0.25 + 0.2 / 2, 0.4, 0.25 + 0.6 / 2, 0.8), abs=1e-5)


def test_meta_names_the_split_and_counts_bytes(dataset):
    _, rows, out, meta = dataset
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["split_id"] == split_id(rows)
    assert meta["images"] == 4
    assert (meta["size"], meta["quality"], meta["fill"]) == (SIZE, 90, 0.0)
    assert meta["bytes"] == sum(path.stat().st_size for path in (out / "images").iterdir())
    assert meta["bytes"] > 0


def test_cached_image_matches_the_shared_letterbox(dataset):
    samples, _, out, _ = dataset
    cached = load_cached_image(out, "wide.jpg")
    assert cached.dtype == np.float32
    assert cached.shape == (SIZE, SIZE)
    assert 0.0 <= cached.min() and cached.max() <= 1.0
    # The 16-row bands above and below the 32-row image are the constant fill.
    assert np.abs(cached[:14]).max() < 0.05 and np.abs(cached[-14:]).max() < 0.05
    assert cached[20:44].mean() > 0.2
    source = next(s for s in samples if s.path.name == "wide.jpg")
    expected, _ = letterbox(load_radiograph(source.path).pixels, SIZE)
    assert np.abs(cached - expected).mean() < 0.02


def test_build_cache_rejects_rows_without_images(dataset, tmp_path):
    samples, rows, _, _ = dataset
    with pytest.raises(ValueError, match="1 split rows have no image"):
        without_tall = [s for s in samples if s.path.name != "tall.jpg"]
        build_cache(without_tall, rows, tmp_path, CacheConfig(size=SIZE), workers=1)


def test_format_and_parse_boxes_round_trip():
    boxes = [(0.1, 0.2, 0.3, 0.4), (0.5, 0.6, 0.7, 0.8)]
    text = format_boxes(boxes)
    assert text == "0.10000 0.20000 0.30000 0.40000;0.50000 0.60000 0.70000 0.80000"
    assert parse_boxes(text) == boxes
    assert parse_boxes("") == []


def test_cached_bank_holds_the_stored_bytes(dataset, tmp_path):
    from train.cache import load_cached_bank

    samples, rows = dataset[0], dataset[1]
    build_cache(samples, rows, tmp_path / "bank", CacheConfig(size=SIZE), workers=1)
    index = read_cache_index(tmp_path / "bank")
    bank = load_cached_bank(tmp_path / "bank", index)
    assert bank.dtype == np.uint8 and bank.shape == (len(index), SIZE, SIZE)
    as_float = load_cached_image(tmp_path / "bank", index[0]["file"])
    assert np.array_equal(bank[0], np.rint(as_float * 255).astype(np.uint8))


@pytest.mark.realdata
@pytest.mark.slow
def test_a_png16_cache_at_the_training_size_gives_the_apps_inputs(tmp_path, fracatlas_root):
    """Real films: the cached canvas through the training twin equals the app's preprocessing
    of the original file to the 16-bit rounding (docs/training.md states the tolerance)."""
    torch = pytest.importorskip("torch")
    from edge_app.preprocess import PreprocessConfig, preprocess
    from train.cache import CacheConfig, build_cache, load_cached_bank, read_cache_index
    from train.tensor_preprocess import preprocess_batch

    samples = [s for s in iter_fracatlas(fracatlas_root)][::400][:10]  # both kinds of film
    rows = make_split(samples, {}, SplitConfig(0.3, 0.3, seed=0))
    build_cache(samples, rows, tmp_path / "cache", CacheConfig(size=96, format="png16"), workers=1)
    config = PreprocessConfig(input_size=96, mean=0.5, std=0.5, fill=0.0)
    cached = read_cache_index(tmp_path / "cache")
    bank = torch.from_numpy(load_cached_bank(tmp_path / "cache", cached)).unsqueeze(1)
    training = preprocess_batch(bank.float() / 65535, config).squeeze(1).numpy()
    paths = {s.path.name: s.path for s in samples}
    app = np.stack(
        [preprocess(load_radiograph(paths[r["file"]]).pixels, config)[0] for r in cached]
    )
    assert len(cached) >= 8
    assert np.abs(training - app).max() * config.std <= 0.5 / 65535 + 1e-6
    parsed = [r for r in cached if r["outlines"]]
    assert all(parse_outlines(r["outlines"]) for r in parsed)
