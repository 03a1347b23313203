"""The held-out-acquisition split: every large-format film in test, none in train or val, no
near-duplicate group crossing. Synthetic trees here; one ``realdata`` test reads the committed
split of FracAtlas (Abedeen et al., Sci Data 10:521, 2023; CC BY 4.0)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracture_edge.cli import main
from train.datasets import iter_fracatlas
from train.held_out import (
    LARGE_FORMAT_MIN_LONG_SIDE,
    held_out_indices,
    image_long_side,
    large_format_indices,
)
from train.splits import EXCLUDED, NEAR_HELD_OUT, SplitConfig, make_split, read_split

REPO = Path(__file__).resolve().parents[2]
HELD_OUT_SPLITS = sorted((REPO / "splits").glob("fracatlas-heldout-*.csv"))


def _film(height: int, width: int, seed: int) -> np.ndarray:
    """A cheap uint8 film of any size (large ones too): smooth gradient plus noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.2, 0.8, height, dtype=np.float32)[:, None]
    image = rows + 0.05 * rng.standard_normal((height, width), dtype=np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def atlas(tmp_path, fracatlas_tree, atlas_image) -> tuple[Path, dict]:
    """24 small films and 6 large ones (1,024 px long side); ``SMALL05`` is a downscaled copy
    of ``LARGE00`` (a near-duplicate crossing formats); ``SMALL01``/``SMALL02`` are copies of
    each other; ``LARGE05`` is truncated."""
    large = [
        atlas_image(f"LARGE{i:02d}.jpg", i % 2 == 0, _film(1024, 820, 100 + i)) for i in range(6)
    ]
    small = [atlas_image(f"SMALL{i:02d}.jpg", i % 3 == 0, _film(454, 373, i)) for i in range(24)]
    copy = np.asarray(Image.fromarray(large[0].pixels).resize((373, 454)))
    small[5] = atlas_image("SMALL05.jpg", True, copy)
    root = fracatlas_tree(tmp_path / "fracatlas", [*small, *large])
    audit = {
        "near_duplicate_groups": [["LARGE00.jpg", "SMALL05.jpg"], ["SMALL01.jpg", "SMALL02.jpg"]],
        "label_conflict_groups": [],
        "truncated": ["LARGE05.jpg"],
        "label_source_disagreements": [],
    }
    return root, audit


def test_long_side_is_read_from_the_header(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((30, 1200), np.uint8)).save(path)
    assert image_long_side(path) == 1200
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert image_long_side(tmp_path / "junk.jpg") is None


def test_large_format_films_are_found_by_their_size(atlas):
    root, _ = atlas
    samples = list(iter_fracatlas(root))
    names = sorted(samples[i].path.name for i in large_format_indices(samples))
    assert names == [f"LARGE{i:02d}.jpg" for i in range(6)]
    assert held_out_indices("large-format", samples) == large_format_indices(samples)
    assert large_format_indices(samples, min_long_side=2000) == []
    assert LARGE_FORMAT_MIN_LONG_SIDE == 1000
    with pytest.raises(ValueError, match="valid: large-format"):
        held_out_indices("scanner-b", samples)


def test_held_out_split_tests_only_large_films_and_excludes_their_copies(atlas):
    root, audit = atlas
    samples = list(iter_fracatlas(root))
    held = large_format_indices(samples)
    rows = {row.file: row for row in make_split(samples, audit, SplitConfig(), held_out=held)}
    test = {name for name, row in rows.items() if row.split == "test"}
    assert test == {f"LARGE{i:02d}.jpg" for i in range(5)}  # LARGE05 is truncated
    assert rows["LARGE05.jpg"].reason == "truncated"
    assert rows["SMALL05.jpg"].split == EXCLUDED
    assert rows["SMALL05.jpg"].reason == NEAR_HELD_OUT
    others = [row for row in rows.values() if row.file.startswith("SMALL") and row.reason == ""]
    assert {row.split for row in others} == {"train", "val"}
    assert rows["SMALL01.jpg"].split == rows["SMALL02.jpg"].split
    # Without the hold-out, the same data is dealt out 70/15/15 and SMALL05 is kept.
    plain = {row.file: row for row in make_split(samples, audit, SplitConfig())}
    assert plain["SMALL05.jpg"].split == plain["LARGE00.jpg"].split != EXCLUDED


def test_held_out_val_fraction_is_of_the_films_not_held_out():
    from train.datasets import Sample

    samples = [
        Sample(Path(f"/d/s{i:03d}.jpg"), int(i % 5 == 0), f"s{i:03d}", {}) for i in range(200)
    ]
    held = list(range(0, 200, 4))  # 50 held out
    rows = make_split(samples, {}, SplitConfig(val_fraction=0.2, folds=3), held_out=held)
    counts = Counter(row.split for row in rows)
    assert counts == {"test": 50, "train": 120, "val": 30}
    assert {row.fold for row in rows if row.split == "test"} == {-1}
    assert {row.fold for row in rows if row.split != "test"} == {0, 1, 2}


def test_held_out_refuses_an_earlier_assignment(atlas):
    root, audit = atlas
    samples = list(iter_fracatlas(root))
    first = make_split(samples, audit, SplitConfig())
    with pytest.raises(ValueError, match="drop --keep-from"):
        make_split(samples, audit, SplitConfig(), previous=first, held_out=[0])


def test_cli_writes_the_held_out_split_under_its_id(atlas, tmp_path, capsys):
    root, audit = atlas
    audit_path = tmp_path / "audit.json"
    audit_path.write_text(json.dumps(audit))
    out = tmp_path / "splits" / "heldout-{split_id}.csv"
    arguments = ["data", "split", str(root), "--audit", str(audit_path), "--out", str(out)]
    assert main([*arguments, "--hold-out", "large-format"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[: printed.rindex("}") + 1])
    path = tmp_path / "splits" / f"heldout-{summary['split_id']}.csv"
    assert path.is_file()
    assert summary["held_out"] == {"name": "large-format", "images": 6}
    assert summary["counts"]["test"]["images"] == 5
    assert {row.relpath.split("/")[-1] for row in read_split(path) if row.split == "test"} == {
        f"LARGE{i:02d}.jpg" for i in range(5)
    }
    assert main([*arguments, "--hold-out", "large-format", "--test", "0.2"]) == 2
    assert "drop --test" in capsys.readouterr().err


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_committed_held_out_split_tests_every_large_format_film(fracatlas_root):
    if not HELD_OUT_SPLITS:
        pytest.skip("no splits/fracatlas-heldout-*.csv committed")
    rows = read_split(HELD_OUT_SPLITS[-1])
    large = {
        path.name
        for path in (fracatlas_root / "images").rglob("*.jpg")
        if (image_long_side(path) or 0) >= LARGE_FORMAT_MIN_LONG_SIDE
    }
    assert len(large) == 351
    by_file = {row.file: row for row in rows}
    assert len(by_file) == 4083
    excluded_large = {name for name in large if by_file[name].split == EXCLUDED}
    assert {row.file for row in rows if row.split == "test"} == large - excluded_large
    assert not any(by_file[name].split in ("train", "val") for name in large)
    splits_of_group = defaultdict(set)
    for row in rows:
        if row.split != EXCLUDED:
            splits_of_group[row.group].add(row.split)
    assert all(len(splits) == 1 for splits in splits_of_group.values())
    test_groups = {row.group for row in rows if row.split == "test"}
    near = [row for row in rows if row.reason == NEAR_HELD_OUT]
    assert near and all(row.file not in large for row in near)
    assert all(
        row.group in test_groups or row.group in {by_file[n].group for n in large} for row in near
    )
