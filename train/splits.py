"""Leak-free, stratified, grouped splits written to a split file.

A *group* never straddles two splits. Groups are the patient (or study) when the data set knows
it, merged with the near-duplicate groups from the audit: FracAtlas has no patient ids, and its
re-encoded / resized / shifted copies would otherwise land on both sides of a split.

Rows are excluded, with the reason written into the split file and the log, when:

- they sit in a duplicate group whose members carry different labels (``label-conflict``);
- the file could not be read (``unreadable``);
- the file is truncated (``truncated``; in FracAtlas every truncated file is a negative, so
  the grey band that replaces the missing rows would be a label shortcut). ``keep_truncated``
  keeps them;
- its label sources disagree and no fracture box settles it (``label-source-disagreement``);
- with a held-out test set (``held_out``, e.g. every large-format film: see
  :mod:`train.held_out`), it is not held out but shares a group with a held-out film
  (``near-duplicate-of-held-out``), so no group crosses into the held-out test set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import UsageError
from train.datasets import Sample
from train.duplicates import connected_groups

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
EXCLUDED = "excluded"
SPLIT_COLUMNS = ("file", "split", "label", "group", "fold", "reason", "relpath")
NEAR_HELD_OUT = "near-duplicate-of-held-out"


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    folds: int = 0
    seed: int = 0
    keep_truncated: bool = False

    def __post_init__(self) -> None:
        if not (
            0 <= self.val_fraction < 1
            and 0 <= self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise UsageError(
                f"val_fraction ({self.val_fraction}) and test_fraction ({self.test_fraction}) "
                "must be in [0, 1) and sum to less than 1"
            )
        if self.folds == 1 or self.folds < 0:
            raise UsageError(f"folds must be 0 (no k-fold) or at least 2, got {self.folds}")


@dataclass
class SplitRow:
    file: str
    split: str
    label: int
    group: str
    fold: int
    reason: str
    relpath: str


# --------------------------------------------------------------------------- groups


def leak_groups(samples: Sequence[Sample], duplicate_groups: Iterable[Sequence[str]]) -> list[str]:
    """One group id per sample: its own group merged with every duplicate group it is in."""
    index_of_name: dict[str, list[int]] = {}
    index_of_group: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        index_of_name.setdefault(Path(sample.path).name, []).append(index)
        index_of_group.setdefault(sample.group, []).append(index)
    edges = []
    for members in index_of_group.values():
        edges += [(members[0], other) for other in members[1:]]
    for names in duplicate_groups:
        indices = [i for name in names for i in index_of_name.get(name, [])]
        edges += [(indices[0], other) for other in indices[1:]]
    group_id = [samples[i].group for i in range(len(samples))]
    for members in connected_groups(len(samples), edges):
        # Name a merged group after its first sample's group: stable across runs.
        for member in members:
            group_id[member] = samples[members[0]].group
    return group_id


def exclusion_reasons(
    samples: Sequence[Sample], audit: dict[str, Any], keep_truncated: bool = False
) -> dict[int, str]:
    """Index → reason for every sample that must not be used."""
    names = {Path(sample.path).name: i for i, sample in enumerate(samples)}
    reasons: dict[int, str] = {}

    def mark(files: Iterable[str], reason: str) -> None:
        for name in files:
            if name in names:
                reasons.setdefault(names[name], reason)

    mark((n for g in audit.get("label_conflict_groups", []) for n in g), "label-conflict")
    mark(audit.get("unreadable", {}), "unreadable")
    if not keep_truncated:
        mark(audit.get("truncated", []), "truncated")
    unresolved = [
        name
        for name in audit.get("label_source_disagreements", [])
        if name in names and not _boxes_settle_label(samples[names[name]])
    ]
    mark(unresolved, "label-source-disagreement")
    return reasons


def _boxes_settle_label(sample: Sample) -> bool:
    """A fracture box on an image filed as fractured settles a folder-vs-CSV disagreement."""
    return sample.label == 1 and bool(sample.metadata.get("boxes"))


# --------------------------------------------------------------------------- assignment


def assign_groups(
    group_labels: dict[str, list[int]], fractions: Sequence[float], seed: int
) -> dict[str, int]:
    """Greedy stratified assignment of groups to bins with target ``fractions``.

    Groups are shuffled (seeded), then placed largest first, each into the bin that is furthest
    below its target for the group's majority class. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    names = list(group_labels)
    rng.shuffle(names)
    names.sort(key=lambda name: -len(group_labels[name]))
    classes = sorted({label for labels in group_labels.values() for label in labels})
    totals = {c: sum(labels.count(c) for labels in group_labels.values()) for c in classes}
    filled = np.zeros((len(fractions), len(classes)))
    targets = np.array([[f * totals[c] for c in classes] for f in fractions])
    assignment: dict[str, int] = {}
    for name in names:
        labels = group_labels[name]
        counts = np.array([labels.count(c) for c in classes], dtype=float)
        majority = int(np.argmax(counts))
        deficit = (targets[:, majority] - filled[:, majority]) / np.maximum(targets[:, majority], 1)
        chosen = int(np.argmax(deficit))
        assignment[name] = chosen
        filled[chosen] += counts
    return assignment


def make_split(
    samples: Sequence[Sample],
    audit: dict[str, Any],
    config: SplitConfig,
    root: Path | None = None,
    previous: Sequence[SplitRow] | None = None,
    held_out: Collection[int] = (),
) -> list[SplitRow]:
    """Split ``samples`` into train/val/test (and k folds), leak-free under ``audit``'s groups.

    With ``previous`` (an earlier split file), every group keeps the split and fold its images
    had, so models trained on that split stay comparable after the audit improves: only the
    exclusions are recomputed, and groups new to the data set are dealt out as usual. A group
    the new audit merged across two earlier splits goes to the earliest of train, val, test
    (a model trained on the earlier split has seen its train member), with a warning.

    With ``held_out`` (sample indices), the test set is exactly those samples (minus the
    usual exclusions); any other sample of their groups is excluded as
    ``near-duplicate-of-held-out``; the rest is dealt into train and val only, val taking
    ``config.val_fraction`` of it (``config.test_fraction`` is not used).
    """
    if held_out and previous:
        raise UsageError(
            "a held-out test set cannot keep the assignment of an earlier split file: "
            "drop --keep-from (or --hold-out)"
        )
    groups = leak_groups(samples, audit.get("near_duplicate_groups", []))
    excluded = exclusion_reasons(samples, audit, config.keep_truncated)
    for index, reason in held_out_exclusions(groups, held_out).items():
        excluded.setdefault(index, reason)
    for index, reason in sorted(excluded.items()):
        logger.info("excluding %s: %s", Path(samples[index].path).name, reason)
    group_labels: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if index not in excluded:
            group_labels.setdefault(groups[index], []).append(int(sample.label))
    kept_split, kept_fold = _previous_assignment(samples, groups, excluded, previous)
    fresh = {name: labels for name, labels in group_labels.items() if name not in kept_split}
    held_groups = {groups[index] for index in held_out if index not in excluded}
    split_of_group = {**_assign_splits(fresh, held_groups, config), **kept_split}
    fold_of_group = {**_folds(fresh, split_of_group, config), **kept_fold}
    rows = []
    for index, sample in enumerate(samples):
        group = groups[index]
        if index in excluded:
            split, fold, reason = EXCLUDED, -1, excluded[index]
        else:
            split, fold, reason = SPLIT_NAMES[split_of_group[group]], fold_of_group[group], ""
        relpath = (
            str(Path(sample.path).resolve().relative_to(root.resolve()))
            if root
            else str(sample.path)
        )
        rows.append(
            SplitRow(Path(sample.path).name, split, int(sample.label), group, fold, reason, relpath)
        )
    return rows


def held_out_exclusions(groups: Sequence[str], held_out: Collection[int]) -> dict[int, str]:
    """Index → ``near-duplicate-of-held-out`` for every sample that is not held out but shares
    a group with one that is: it would carry the held-out acquisition into train or val."""
    held = set(held_out)
    held_groups = {groups[index] for index in held}
    return {
        index: NEAR_HELD_OUT
        for index, group in enumerate(groups)
        if group in held_groups and index not in held
    }


def _assign_splits(
    group_labels: dict[str, list[int]], held_groups: set[str], config: SplitConfig
) -> dict[str, int]:
    """Split index per group: held-out groups are test, the rest is dealt out as configured."""
    if not held_groups:
        train_fraction = 1 - config.val_fraction - config.test_fraction
        fractions = [train_fraction, config.val_fraction, config.test_fraction]
        return assign_groups(group_labels, fractions, config.seed)
    pool = {name: labels for name, labels in group_labels.items() if name not in held_groups}
    assigned = assign_groups(pool, [1 - config.val_fraction, config.val_fraction], config.seed)
    return {**assigned, **dict.fromkeys(held_groups, SPLIT_NAMES.index("test"))}


def _previous_assignment(
    samples: Sequence[Sample],
    groups: Sequence[str],
    excluded: dict[int, str],
    previous: Sequence[SplitRow] | None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Split index and fold per group, taken from an earlier split file."""
    if not previous:
        return {}, {}
    earlier = {row.file: row for row in previous if row.split in SPLIT_NAMES}
    members: dict[str, list[SplitRow]] = {}
    for index, sample in enumerate(samples):
        row = earlier.get(Path(sample.path).name)
        if index not in excluded and row is not None:
            members.setdefault(groups[index], []).append(row)
    kept_split, kept_fold = {}, {}
    for group, rows in members.items():
        splits = sorted({SPLIT_NAMES.index(row.split) for row in rows})
        if len(splits) > 1:
            logger.warning(
                "group %s sat in %s in the earlier split; keeping it in %s",
                group,
                [SPLIT_NAMES[s] for s in splits],
                SPLIT_NAMES[splits[0]],
            )
        kept_split[group] = splits[0]
        kept_fold[group] = min(
            row.fold for row in rows if SPLIT_NAMES.index(row.split) == splits[0]
        )
    return kept_split, kept_fold


def _folds(
    group_labels: dict[str, list[int]], split_of_group: dict[str, int], config: SplitConfig
) -> dict[str, int]:
    """k folds over the non-test groups (test stays held out); -1 for test groups."""
    if config.folds < 2:
        return {name: -1 for name in group_labels}
    pool = {name: labels for name, labels in group_labels.items() if split_of_group[name] != 2}
    folds = assign_groups(pool, [1 / config.folds] * config.folds, config.seed + 1)
    return {name: folds.get(name, -1) for name in group_labels}


# --------------------------------------------------------------------------- files


def split_id(rows: Sequence[SplitRow]) -> str:
    """A short content hash naming this split in model cards and reports."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.relpath):
        digest.update(f"{row.relpath}\t{row.split}\t{row.label}\t{row.fold}\n".encode())
    return digest.hexdigest()[:12]


def write_split(rows: Sequence[SplitRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for row in rows:
        writer.writerow([getattr(row, column) for column in SPLIT_COLUMNS])
    path.write_text(buffer.getvalue())
    return path


def read_split(path: str | Path) -> list[SplitRow]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "split", "label", "group"} - set(reader.fieldnames or [])
        if missing:
            raise UsageError(f"{path} is not a split file: it lacks the columns {sorted(missing)}")
        return [
            SplitRow(
                file=row["file"],
                split=row["split"],
                label=int(row["label"]),
                group=row["group"],
                fold=int(row.get("fold") or -1),
                reason=row.get("reason", ""),
                relpath=row.get("relpath") or row["file"],
            )
            for row in reader
        ]


def straddling_groups(split_of_file: dict[str, str], groups: Iterable[Sequence[str]]):
    """Duplicate groups whose files sit in more than one split (files not in the map ignored)."""
    found = []
    for group in groups:
        splits = {split_of_file[name] for name in group if name in split_of_file}
        splits.discard(EXCLUDED)
        if len(splits) > 1:
            found.append(list(group))
    return found


def split_counts(rows: Sequence[SplitRow]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = counts.setdefault(row.split, {"images": 0, "fractured": 0})
        entry["images"] += 1
        entry["fractured"] += int(row.label == 1)
    return counts
