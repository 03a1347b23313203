"""Tests for train.splits on synthetic samples (fake paths; no images are read)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from train.datasets import Sample
from train.splits import (
    EXCLUDED,
    SplitConfig,
    exclusion_reasons,
    leak_groups,
    make_split,
    read_split,
    split_counts,
    split_id,
    straddling_groups,
    write_split,
)

DATA = Path("/data/synthetic")


def sample(name: str, label: int, group: str | None = None, **metadata) -> Sample:
    return Sample(DATA / name, label, group or name, metadata)


def patient_samples(count: int = 300, seed: int = 7) -> list[Sample]:
    """``count`` images of patients with 1-4 images each; about 30 % fractured."""
    rng = np.random.default_rng(seed)
    samples, patient = [], 0
    while len(samples) < count:
        for _ in range(int(rng.integers(1, 5))):
            label = int(rng.random() < 0.3)
            samples.append(sample(f"img{len(samples):04d}.jpg", label, f"P{patient:03d}"))
        patient += 1
    return samples[:count]


def rows_by_file(rows):
    return {row.file: row for row in rows}


def splits_per(rows, key) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.split != EXCLUDED:
            found[key(row)].add(row.split)
    return found


@pytest.fixture
def samples() -> list[Sample]:
    return patient_samples()


@pytest.fixture
def duplicate_audit(samples) -> dict:
    """Duplicate groups that link images of different patients (labels agree in each)."""
    by_label = defaultdict(list)
    for s in samples:
        by_label[s.label].append(Path(s.path).name)
    groups = [
        [by_label[0][0], by_label[0][-1]],
        [by_label[1][2], by_label[1][-3]],
        [by_label[0][10], by_label[0][40], by_label[0][90]],
    ]
    return {
        "near_duplicate_groups": groups,
        "label_conflict_groups": [],
        "truncated": [],
        "label_source_disagreements": [],
    }


# --------------------------------------------------------------------------- leakage


def test_no_group_straddles_two_splits(samples, duplicate_audit):
    rows = make_split(samples, duplicate_audit, SplitConfig(seed=3))
    assert {row.split for row in rows} == {"train", "val", "test"}
    split_of_file = {row.file: row.split for row in rows}
    assert straddling_groups(split_of_file, duplicate_audit["near_duplicate_groups"]) == []
    # Patients: the sample's own group.
    patient_of_file = {Path(s.path).name: s.group for s in samples}
    per_patient = splits_per(rows, lambda row: patient_of_file[row.file])
    assert all(len(splits) == 1 for splits in per_patient.values())
    # The merged groups written into the split file.
    assert all(len(splits) == 1 for splits in splits_per(rows, lambda row: row.group).values())
    # Control: without the audit's groups the same seed does split duplicates.
    unaware = {row.file: row.split for row in make_split(samples, {}, SplitConfig(seed=3))}
    assert straddling_groups(unaware, duplicate_audit["near_duplicate_groups"]) != []


def test_duplicates_of_different_patients_share_a_group(samples, duplicate_audit):
    rows = rows_by_file(make_split(samples, duplicate_audit, SplitConfig()))
    for group in duplicate_audit["near_duplicate_groups"]:
        assert len({rows[name].group for name in group}) == 1
        assert len({rows[name].split for name in group}) == 1


def test_straddling_groups_reports_split_groups():
    split_of_file = {"a": "train", "b": "test", "c": "val", "d": EXCLUDED, "e": "val"}
    groups = [["a", "b"], ["c", "d"], ["c", "e", "unknown"], ["a"]]
    assert straddling_groups(split_of_file, groups) == [["a", "b"]]


def test_leak_groups_merges_patients_and_duplicates_transitively():
    samples = [
        sample("s0.jpg", 1, "P1"),
        sample("s1.jpg", 1, "P1"),
        sample("s2.jpg", 1, "P2"),
        sample("s3.jpg", 1, "P2"),
        sample("s4.jpg", 0),
        sample("s5.jpg", 0, "P3"),
        sample("s6.jpg", 0),
    ]
    duplicate_groups = [["s3.jpg", "s1.jpg"], ["s6.jpg", "s5.jpg"], ["gone.jpg", "also-gone.jpg"]]
    # s0-s1 (patient) - s3 (duplicate) - s2 (patient): one group, named after s0's.
    assert leak_groups(samples, duplicate_groups) == [
        "P1",
        "P1",
        "P1",
        "P1",
        "s4.jpg",
        "P3",
        "P3",
    ]


# --------------------------------------------------------------------------- exclusions


@pytest.fixture
def problem_samples() -> list[Sample]:
    box = [(0.1, 0.1, 0.3, 0.3)]
    clean = [sample(f"ok{i:02d}.jpg", i % 2) for i in range(20)]
    return clean + [
        sample("conflict_a.jpg", 1),
        sample("conflict_b.jpg", 0),
        sample("cut.jpg", 0),
        sample("broken.jpg", 0),
        sample("boxed_fracture.jpg", 1, boxes=box),  # folder 1, CSV 0, boxed: settled
        sample("unboxed_fracture.jpg", 1, boxes=[]),  # folder 1, CSV 0, no box
        sample("boxed_negative.jpg", 0, boxes=box),  # a box on a negative settles nothing
    ]


PROBLEM_AUDIT = {
    "near_duplicate_groups": [["conflict_a.jpg", "conflict_b.jpg"], ["ok00.jpg", "ok02.jpg"]],
    "label_conflict_groups": [["conflict_a.jpg", "conflict_b.jpg"]],
    "truncated": ["cut.jpg"],
    "unreadable": {"broken.jpg": "CorruptImageError: broken"},
    "label_source_disagreements": [
        "boxed_fracture.jpg",
        "unboxed_fracture.jpg",
        "boxed_negative.jpg",
        "not_in_the_data.jpg",
    ],
}


def test_excluded_rows_carry_their_reason(problem_samples):
    rows = make_split(problem_samples, PROBLEM_AUDIT, SplitConfig())
    excluded = {row.file: row.reason for row in rows if row.split == EXCLUDED}
    assert excluded == {
        "conflict_a.jpg": "label-conflict",
        "conflict_b.jpg": "label-conflict",
        "cut.jpg": "truncated",
        "broken.jpg": "unreadable",
        "unboxed_fracture.jpg": "label-source-disagreement",
        "boxed_negative.jpg": "label-source-disagreement",
    }
    kept = rows_by_file(rows)
    assert kept["boxed_fracture.jpg"].split in {"train", "val", "test"}
    assert kept["boxed_fracture.jpg"].reason == ""
    assert all(row.fold == -1 for row in rows if row.split == EXCLUDED)
    assert len(rows) == len(problem_samples)


def test_keep_truncated_keeps_the_truncated_file(problem_samples):
    config = SplitConfig(keep_truncated=True)
    rows = rows_by_file(make_split(problem_samples, PROBLEM_AUDIT, config))
    assert rows["cut.jpg"].split != EXCLUDED
    assert rows["cut.jpg"].reason == ""
    assert rows["conflict_a.jpg"].split == EXCLUDED


def test_exclusion_reasons_first_reason_wins(problem_samples):
    audit = {**PROBLEM_AUDIT, "truncated": ["cut.jpg", "conflict_a.jpg"]}
    reasons = exclusion_reasons(problem_samples, audit)
    names = [Path(s.path).name for s in problem_samples]
    assert reasons[names.index("conflict_a.jpg")] == "label-conflict"
    assert reasons[names.index("cut.jpg")] == "truncated"
    assert exclusion_reasons(problem_samples, {}) == {}


# --------------------------------------------------------------------------- assignment


def test_same_seed_same_rows_other_seed_other_assignment(samples, duplicate_audit):
    first = make_split(samples, duplicate_audit, SplitConfig(seed=11))
    again = make_split(samples, duplicate_audit, SplitConfig(seed=11))
    other = make_split(samples, duplicate_audit, SplitConfig(seed=12))
    assert first == again
    assert [row.split for row in first] != [row.split for row in other]
    assert split_id(first) == split_id(again) != split_id(other)


def test_class_ratio_and_size_per_split_follow_the_targets():
    samples = patient_samples(count=400, seed=5)
    rows = make_split(samples, {}, SplitConfig(val_fraction=0.2, test_fraction=0.1, seed=1))
    counts = split_counts(rows)
    overall = sum(s.label for s in samples) / len(samples)
    assert 0.2 < overall < 0.4
    for name, fraction in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert counts[name]["images"] == pytest.approx(fraction * 400, abs=5)
        ratio = counts[name]["fractured"] / counts[name]["images"]
        assert ratio == pytest.approx(overall, abs=0.03)
    assert sum(entry["images"] for entry in counts.values()) == 400


def test_relpath_is_relative_to_the_root(tmp_path):
    samples = [
        Sample(tmp_path / "images" / "Fractured" / "a.jpg", 1, "a.jpg", {}),
        Sample(tmp_path / "images" / "Non_fractured" / "b.jpg", 0, "b.jpg", {}),
    ]
    rows = make_split(samples, {}, SplitConfig(val_fraction=0, test_fraction=0), root=tmp_path)
    assert [row.relpath for row in rows] == ["images/Fractured/a.jpg", "images/Non_fractured/b.jpg"]
    assert [row.split for row in rows] == ["train", "train"]


# --------------------------------------------------------------------------- k-fold


def test_k_fold_covers_non_test_groups_once(samples, duplicate_audit):
    rows = make_split(samples, duplicate_audit, SplitConfig(folds=5, seed=2))
    assert {row.fold for row in rows if row.split == "test"} == {-1}
    non_test = [row for row in rows if row.split in ("train", "val")]
    folds = [row.fold for row in non_test]
    assert set(folds) == {0, 1, 2, 3, 4}
    # Roughly equal folds.
    sizes = np.bincount(folds)
    assert sizes.min() >= 0.15 * len(non_test)
    folds_per_group = defaultdict(set)
    for row in non_test:
        folds_per_group[row.group].add(row.fold)
    assert all(len(found) == 1 for found in folds_per_group.values())


def test_without_folds_every_fold_is_minus_one(samples):
    assert {row.fold for row in make_split(samples, {}, SplitConfig())} == {-1}


# --------------------------------------------------------------------------- files


def test_write_and_read_split_round_trip(tmp_path, problem_samples):
    rows = make_split(problem_samples, PROBLEM_AUDIT, SplitConfig(folds=3))
    path = write_split(rows, tmp_path / "splits" / "split.csv")
    assert path.read_text().splitlines()[0] == "file,split,label,group,fold,reason,relpath"
    assert read_split(path) == rows


def test_read_split_rejects_other_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("file,label\na.jpg,1\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['group', 'split'\]"):
        read_split(path)


def test_split_id_follows_content_not_order(samples):
    rows = make_split(samples, {}, SplitConfig())
    identifier = split_id(rows)
    assert len(identifier) == 12
    assert split_id(list(reversed(rows))) == identifier
    moved = list(rows)
    index = next(i for i, row in enumerate(moved) if row.split == "train")
    moved[index] = dataclasses.replace(moved[index], split="test")
    assert split_id(moved) != identifier


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "options",
    [
        {"val_fraction": 0.5, "test_fraction": 0.5},
        {"val_fraction": -0.1},
        {"test_fraction": 1.0},
        {"folds": 1},
        {"folds": -2},
    ],
)
def test_split_config_rejects_bad_values(options):
    with pytest.raises(ValueError):
        SplitConfig(**options)


def test_split_config_accepts_edges():
    assert SplitConfig(val_fraction=0, test_fraction=0, folds=2).folds == 2


def test_keep_from_an_earlier_split_only_changes_exclusions_and_merged_groups():
    samples = patient_samples(120)
    first = make_split(samples, {}, SplitConfig(seed=3, folds=3))
    by_file = {row.file: row for row in first}
    train_file = next(r.file for r in first if r.split == "train")
    test_file = next(r.file for r in first if r.split == "test")
    excluded_file = next(r.file for r in first if r.split == "val")
    # The improved audit finds that a train and a test image are copies of each other, and
    # that a validation image is truncated.
    audit = {"near_duplicate_groups": [[train_file, test_file]], "truncated": [excluded_file]}
    second = make_split(samples, audit, SplitConfig(seed=99, folds=3), previous=first)
    changed = {
        row.file: row.split
        for row in second
        if (row.split, row.fold) != (by_file[row.file].split, by_file[row.file].fold)
    }
    group_of = {row.file: row.group for row in first}
    moved_group = {
        r.file for r in first if group_of[r.file] in (group_of[train_file], group_of[test_file])
    }
    assert changed[excluded_file] == "excluded"
    assert changed.get(test_file) == "train"
    assert set(changed) <= moved_group | {excluded_file}
    # A different seed changed nothing else: the earlier assignment wins.
    ours = {row.file: row.split for row in second}
    assert straddling_groups(ours, audit["near_duplicate_groups"]) == []
