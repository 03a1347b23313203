"""Linear probes (LP of LP-FT, the frozen multi-scale teacher) and uniform soups."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_app.errors import UsageError

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from train.probe import choose_probe, cross_fitted_logits, fit_probe  # noqa: E402


def _blobs(count=120, dims=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 4 == 0).astype(int)  # 25 % positive
    features = rng.normal(size=(count, dims)) * [1, 5, 0.1, 1, 1, 1] + 3
    features[:, 0] += 2.0 * labels
    return features, labels


def test_a_probe_separates_blobs_and_its_raw_feature_form_is_the_same_map():
    features, labels = _blobs()
    probe = fit_probe(features, labels, l2=1e-3)
    logits = probe.logits(features)
    assert logits[labels == 1].mean() > logits[labels == 0].mean() + 2
    weight, bias = probe.as_linear()
    np.testing.assert_allclose(features @ weight + bias, logits, rtol=1e-9, atol=1e-9)


def test_the_probe_strength_is_chosen_on_validation():
    features, labels = _blobs()
    val_features, val_labels = _blobs(seed=1)
    probe, scores = choose_probe(features, labels, val_features, val_labels, grid=(1e-3, 10.0))
    assert set(scores) == {1e-3, 10.0}
    assert scores[probe.l2] == max(scores.values())


def test_cross_fitted_logits_never_come_from_a_probe_that_saw_the_film():
    features, labels = _blobs(count=40)
    features[7, 0] = 50.0  # one film far out: only a probe fitted on it could place it
    folds = np.arange(40) // 10  # every fold holds both classes
    oof = cross_fitted_logits(features, labels, folds, l2=1e-3)
    assert not np.isnan(oof).any()
    fold = folds == folds[7]
    refit = fit_probe(features[~fold], labels[~fold], 1e-3).logits(features[fold])
    np.testing.assert_allclose(oof[fold], refit)
    with pytest.raises(ValueError, match="both classes"):
        fit_probe(features[labels == 0], labels[labels == 0], 1e-3)


def test_probe_teacher_writes_cross_fitted_logits_for_every_film(
    tmp_path, fracatlas_tree, atlas_image, make_radiograph
):
    from train.datasets import open_dataset
    from train.probe_teacher import FeatureSpec, probe_teacher
    from train.splits import SplitConfig, make_split, write_split

    images = [
        atlas_image(f"IMG{i:07d}.jpg", i % 3 == 0, pixels=make_radiograph(70, 50, i % 3, i))
        for i in range(36)
    ]
    root = fracatlas_tree(tmp_path / "atlas", images)
    rows = make_split(list(open_dataset(root)), {}, SplitConfig(0.25, 0.25, folds=3, seed=0))
    write_split(rows, tmp_path / "split.csv")
    card = probe_teacher(
        root,
        tmp_path / "split.csv",
        [
            FeatureSpec.parse("tf_efficientnet_lite0@64"),
            FeatureSpec.parse("tf_efficientnet_lite0@48"),
        ],
        tmp_path / "teacher",
        name="probe",
        features_cache=tmp_path / "features",
    )
    assert card["features"] == ["tf_efficientnet_lite0@64", "tf_efficientnet_lite0@48"]
    with open(tmp_path / "teacher" / "logits.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == sum(r.split in ("train", "val", "test") for r in rows)
    assert all(np.isfinite(float(r["probe"])) for r in table)
    assert (tmp_path / "features" / "tf_efficientnet_lite0@64.npz").is_file()
    # The average half alone, from the same feature cache: a deployable student's head.
    average = probe_teacher(
        root,
        tmp_path / "split.csv",
        [FeatureSpec.parse("tf_efficientnet_lite0@64")],
        tmp_path / "average",
        name="probe",
        features_cache=tmp_path / "features",
        pooling="avg",
    )
    assert average["pooling"] == "global average of the last feature map"
    with pytest.raises(UsageError, match="pooling must be one of"):
        probe_teacher(root, tmp_path / "split.csv", [], tmp_path / "x", pooling="gem")
    with pytest.raises(ValueError, match="BACKBONE@SIZE"):
        FeatureSpec.parse("tf_efficientnet_lite0")


def test_average_pooling_keeps_the_average_half_of_the_cached_block():
    from train.probe_teacher import _pooled

    block = np.array([[1.0, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0]])  # [avg | max]
    assert _pooled(block, "avg").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert _pooled(block, "avg+max") is block


def test_a_uniform_soup_averages_the_weights_and_is_evaluated(tmp_path, tiny_training_cache):
    from train.checkpoints import load_checkpoint
    from train.config import load_config
    from train.soup import average_states, uniform_soup
    from train.trainer import train

    cache = tiny_training_cache(tmp_path / "cache")
    folders = []
    for seed in (0, 1):
        folder = tmp_path / f"seed{seed}"
        train(
            load_config(
                None,
                dict(
                    cache=str(cache),
                    out=str(folder),
                    backbone="custom_cnn",
                    input_size=32,
                    epochs=1,
                    batch_size=8,
                    progress=False,
                    tensorboard=False,
                    seed=seed,
                ),
            )
        )
        folders.append(folder)
    card = uniform_soup(folders, tmp_path / "soup", command="fracture-edge soup ...")
    assert card["soup_of"] == [str(f) for f in folders] and card["initialisation"] == "uniform soup"
    soup, _, _ = load_checkpoint(tmp_path / "soup")
    first, second = (load_checkpoint(f)[0] for f in folders)
    expected = average_states([first.state_dict(), second.state_dict()])
    for key, value in soup.state_dict().items():
        torch.testing.assert_close(value.float(), expected[key].float())
    assert json.loads((tmp_path / "soup" / "model_card.json").read_text())["metrics"]["val_auroc"]
    with pytest.raises(ValueError, match="at least two"):
        uniform_soup(folders[:1], tmp_path / "x", command="")
