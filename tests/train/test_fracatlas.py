"""Real-data checks on FracAtlas (Abedeen et al., Sci Data 10:521, 2023; CC BY 4.0).

They read ../shared/data/fracatlas (or $FRACATLAS_ROOT) and are skipped, with the reason, where
it is absent, e.g. in a user's fresh clone.
"""

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

from train.audit import audit_dataset
from train.datasets import iter_fracatlas
from train.splits import SplitConfig, make_split, straddling_groups

ROOT = Path(
    os.environ.get(
        "FRACATLAS_ROOT", Path(__file__).resolve().parents[3] / "shared" / "data" / "fracatlas"
    )
)

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT / "dataset.csv").is_file(),
        reason=f"FracAtlas not found at {ROOT} (set FRACATLAS_ROOT)",
    ),
]


@pytest.fixture(scope="module")
def samples():
    return list(iter_fracatlas(ROOT))


@pytest.fixture(scope="module")
def audit(samples):
    return audit_dataset(samples, workers=2).to_json()


def test_adapter_reads_every_image_with_folder_labels(samples):
    assert len(samples) == 4083
    assert Counter(s.label for s in samples) == {0: 3366, 1: 717}
    fractured_with_boxes = sum(1 for s in samples if s.label == 1 and s.metadata["boxes"])
    assert fractured_with_boxes == 717


def test_audit_finds_the_known_problems(audit):
    # Same bytes under two names: 12 groups, 27 files (sha256, counted independently below).
    assert len(audit["exact_duplicate_groups"]) == 12
    assert sum(map(len, audit["exact_duplicate_groups"])) == 27
    # Near-duplicate groups contain the exact ones.
    near = [set(g) for g in audit["near_duplicate_groups"]]
    for group in audit["exact_duplicate_groups"]:
        assert any(set(group) <= n for n in near)
    assert len(audit["near_duplicate_groups"]) >= 100
    # Copies filed under both labels (e.g. IMG0002617 fractured, IMG0004028 not).
    assert ["IMG0002617.jpg", "IMG0004028.jpg"] in audit["label_conflict_groups"]
    assert len(audit["label_conflict_groups"]) >= 5
    # JPEGs that decode only in tolerant mode.
    assert len(audit["truncated"]) >= 50
    assert "IMG0004273.jpg" in audit["truncated"]
    # dataset.csv says 0, the folder (and the fracture box) say 1.
    assert "IMG0003298.jpg" in audit["label_source_disagreements"]


def test_exact_duplicates_agree_with_an_independent_hash():
    import hashlib

    digests = Counter(
        hashlib.md5(p.read_bytes()).hexdigest() for p in (ROOT / "images").rglob("*.jpg")
    )
    assert sum(1 for n in digests.values() if n > 1) == 12


def test_official_split_leaks_and_ours_does_not(samples, audit):
    official = {}
    for name in ("train", "valid", "test"):
        with open(ROOT / "official_fracture_split" / f"{name}.csv", newline="") as handle:
            official.update({row["image_id"]: name for row in csv.DictReader(handle)})
    assert len(straddling_groups(official, audit["near_duplicate_groups"])) > 0

    rows = make_split(samples, audit, SplitConfig(seed=0, folds=5))
    ours = {row.file: row.split for row in rows}
    assert straddling_groups(ours, audit["near_duplicate_groups"]) == []
    folds = {row.file: str(row.fold) for row in rows if row.split not in ("test", "excluded")}
    assert straddling_groups(folds, audit["near_duplicate_groups"]) == []
    excluded = Counter(row.reason for row in rows if row.split == "excluded")
    assert excluded["label-conflict"] >= 10 and excluded["truncated"] > 0
    positive_rate = {
        split: sum(r.label for r in rows if r.split == split)
        / sum(1 for r in rows if r.split == split)
        for split in ("train", "val", "test")
    }
    assert max(positive_rate.values()) - min(positive_rate.values()) < 0.02
