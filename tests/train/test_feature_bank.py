"""Feature banks, tapped models, the top-block fine-tune and the probe search, on tiny data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from train.feature_bank import (  # noqa: E402
    _write_bank,
    block_maps,
    extract_bank,
    read_maps,
)
from train.models import create_model  # noqa: E402


@pytest.fixture(scope="module")
def films(tmp_path_factory, tiny_training_cache):
    cache = tiny_training_cache(tmp_path_factory.mktemp("films"), count=12, size=48)
    return cache, [(p.name, p) for p in sorted((cache / "images").glob("*.jpg"))]


# --------------------------------------------------------------------------- tapped models


def test_tapped_cam_is_the_exact_map_of_the_logit_at_stride_16():
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", feature_taps=("block4", "head")).eval()
    torch.nn.init.normal_(model.fracture_head.weight, std=0.05)
    assert model.num_features == 112 + 1280
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        cam = model.class_activation_map(x)
        logit = model(x)
    assert cam.shape == (2, 8, 8)  # 128 / 16
    assert torch.allclose(cam.mean((1, 2)) + model.fracture_head.bias, logit, atol=1e-5)


def test_tapped_pool_equals_the_pooled_blocks():
    model = create_model("tf_efficientnet_lite0", feature_taps=("block4", "head")).eval()
    x = torch.randn(1, 1, 96, 96)
    with torch.no_grad():
        pooled = model.features(x).mean((2, 3))
        maps = {name: m for name, _, m in block_maps(model.backbone, x)}
    expected = torch.cat([maps["block4"].mean((2, 3)), maps["head"].mean((2, 3))], 1)
    assert torch.allclose(pooled, expected, atol=1e-5)


def test_unknown_tap_names_the_valid_ones():
    with pytest.raises(ValueError, match="block4"):
        create_model("tf_efficientnet_lite0", feature_taps=("block9",))


# --------------------------------------------------------------------------- banks


def test_bank_resumes_and_keeps_maps(films, tmp_path):
    _, pairs = films
    out = tmp_path / "bank.npz"
    first = extract_bank(
        "tf_efficientnet_lite0", 64, pairs[:5], out, batch_size=2, keep_map="block5"
    )
    assert len(first.files) == 5
    stamp = out.stat().st_mtime_ns
    again = extract_bank("tf_efficientnet_lite0", 64, pairs[:5], out, keep_map="block5")
    assert out.stat().st_mtime_ns == stamp and again.files == first.files  # nothing recomputed
    with pytest.raises(KeyError, match="no complete map"):
        read_maps(out, [pairs[7][0]])
    full = extract_bank("tf_efficientnet_lite0", 64, pairs, out, batch_size=4, keep_map="block5")
    assert sorted(full.files) == sorted(k for k, _ in pairs)
    np.testing.assert_array_equal(
        full.select(["head:avg"], [pairs[0][0]]), first.select(["head:avg"], [pairs[0][0]])
    )
    keys = [pairs[9][0], pairs[1][0]]
    maps = read_maps(out, keys).astype(np.float32)
    np.testing.assert_allclose(maps.mean((2, 3)), full.select(["block5:avg"], keys), atol=2e-2)
    with pytest.raises(ValueError, match="head:avg"):
        full.select(["head:median"])


def test_bank_reads_films_like_the_app(films, tmp_path):
    """The bank's head features are the model's pooled features of the app's own input."""
    from edge_app.preprocess import preprocess
    from edge_app.radiograph import load_radiograph
    from train.registry import preprocessing_for

    _, pairs = films
    bank = extract_bank("tf_efficientnet_lite0", 64, pairs[:2], tmp_path / "b.npz")
    model = create_model("tf_efficientnet_lite0", pretrained="offline").eval()
    config = preprocessing_for("tf_efficientnet_lite0", "offline", 64)
    x = preprocess(load_radiograph(pairs[1][1]).pixels, config)[0]
    with torch.no_grad():
        expected = model.features(torch.from_numpy(x)[None, None]).mean((2, 3)).numpy()
    np.testing.assert_allclose(bank.select(["head:avg"], [pairs[1][0]]), expected, atol=1e-4)


# --------------------------------------------------------------------------- top fine-tune


def test_top_finetune_puts_back_a_model_with_the_same_logits():
    from train.top_finetune import TopConfig, TopData, TopNet, fine_tune, full_model, logits_of

    base = create_model("tf_efficientnet_lite0", pretrained="offline").eval()
    x = torch.rand(16, 1, 96, 96) * 2 - 1
    with torch.no_grad():
        maps = {name: m for name, _, m in block_maps(base.backbone, x)}
    labels = np.array([0, 1] * 8)
    data = TopData(maps["block5"].half().numpy(), maps["block4"].mean((2, 3)).numpy(), labels)
    head = np.random.default_rng(0).normal(0, 0.01, 112 + 1280)
    result = fine_tune(base.backbone, head, 0.0, data, data, TopConfig(epochs=2, batch_size=8))
    assert [row["epoch"] for row in result["history"]] == [0, 1, 2]
    state = result["states"][-1]
    assert not torch.equal(state["conv_head.weight"], result["states"][0]["conv_head.weight"])
    top = TopNet(base.backbone, 112)
    top.load_state_dict(state)
    model = full_model("tf_efficientnet_lite0", ("block4", "head"), state)
    with torch.no_grad():
        full = model(x).numpy()
    np.testing.assert_allclose(full, logits_of(top, data), atol=2e-3)


# --------------------------------------------------------------------------- probe search


def _bank(path: Path, files, features):
    from train.feature_bank import Tap

    taps = [Tap("head", "avg", 0, features.shape[1], 32)]
    _write_bank(path, list(files), features, taps, {"backbone": "x", "size": 1, "flip": False})
    return path


def test_probe_search_fits_on_fracatlas_and_only_scores_the_site(tmp_path):
    from train.probe_search import run_search

    rng = np.random.default_rng(0)
    count = 120
    labels = rng.integers(0, 2, count)
    split = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    files = [f"F{i}.jpg" for i in range(count)]
    features = rng.normal(size=(count, 6)) + labels[:, None] * np.array([1.5, 0, 0, 0, 0, 0])
    with open(tmp_path / "split.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split", "label", "relpath"])
        writer.writerows(zip(files, split, labels, files, strict=True))
    site_labels = rng.integers(0, 2, 60)
    site_files = [f"S{i}.jpg" for i in range(60)]
    site_features = rng.normal(size=(60, 6)) + site_labels[:, None] * np.array([0.8, 0, 0, 0, 0, 0])

    def write_site(name, values):
        with open(tmp_path / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "fracture", "source"])
            writer.writerows(
                (f, v, f"g{i // 3}")
                for i, (f, v) in enumerate(zip(site_files, values, strict=True))
            )

    write_site("site.csv", site_labels)
    write_site("shuffled.csv", rng.permutation(site_labels))
    plan = {
        "banks": {"b": str(_bank(tmp_path / "fa.npz", files, features))},
        "site_banks": {"b": str(_bank(tmp_path / "site.npz", site_files, site_features))},
        "split": str(tmp_path / "split.csv"),
        "site_labels": str(tmp_path / "site.csv"),
        "candidates": {"one": ["b:head:avg"]},
        "score_test": ["one"],
    }
    row = run_search(plan, tmp_path / "out")[0]
    assert row["site_auroc"] > 0.7 and row["val_auroc"] > 0.7 and "test_auroc" in row
    low, high = row["site_auroc_ci95"]
    assert low < row["site_auroc"] < high
    shuffled = run_search(dict(plan, site_labels=str(tmp_path / "shuffled.csv")), tmp_path / "o2")[
        0
    ]
    # the site's labels change its score and nothing else: no choice was made on them
    assert (shuffled["l2"], shuffled["val_auroc"], shuffled["temperature"]) == (
        row["l2"],
        row["val_auroc"],
        row["temperature"],
    )
    assert shuffled["site_auroc"] != row["site_auroc"]
    assert json.loads((tmp_path / "out" / "probe-search.json").read_text())[0]["name"] == "one"
    assert "site B AUROC" in (tmp_path / "out" / "probe-search.md").read_text()


def test_top_finetune_verb_chooses_on_the_site_and_writes_a_checkpoint(
    tmp_path, tiny_training_cache
):
    from fracture_edge.cli import main
    from train.checkpoints import load_checkpoint

    cache = tiny_training_cache(tmp_path / "cache", count=24, size=64)
    pairs = [(p.name, p) for p in sorted((cache / "images").glob("*.jpg"))]
    bank = tmp_path / "fa.npz"
    extract_bank("tf_efficientnet_lite0", 64, pairs, bank, keep_map="block5")
    with open(cache / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(tmp_path / "site.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "fracture", "source"])
        writer.writerows((r["file"], r["label"], r["file"][:6]) for r in rows)
    out = tmp_path / "top"
    argv = ["top-finetune", "--bank", str(bank), "--split", str(cache / "index.csv")]
    argv += ["--site-bank", str(bank), "--site-labels", str(tmp_path / "site.csv")]
    argv += ["--epochs", "2", "--checkpoint-cache", str(cache), "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "top_finetune.json").read_text())
    best = max(summary["history"], key=lambda row: row["site_auroc"])
    assert summary["chosen_epoch"] == best["epoch"] and summary["chosen_on"] == "site_auroc"
    model, card, preprocessing = load_checkpoint(out)
    assert card["feature_taps"] == ["block4", "head"] and preprocessing.input_size == 64
    assert "top-finetune" in card["command"]
    with torch.no_grad():
        assert model.class_activation_map(torch.zeros(1, 1, 64, 64)).shape == (1, 4, 4)


def test_feature_taps_refuse_a_size_that_does_not_tile():
    from train.config import load_config

    with pytest.raises(ValueError, match="divisible by 32"):
        load_config(None, {"feature_taps": ["block4", "head"], "input_size": 200})


def test_lp_only_run_from_a_bank_writes_a_complete_checkpoint(tmp_path, tiny_training_cache):
    """epochs: 0 with linear_probe_init is the frozen floor as a plan run: the offline backbone
    untouched, the head fitted on the bank's pooled taps."""
    from train.checkpoints import load_checkpoint
    from train.config import load_config
    from train.trainer import train

    cache = tiny_training_cache(tmp_path / "cache", count=24, size=64)
    pairs = [(p.name, p) for p in sorted((cache / "images").glob("*.jpg"))]
    bank = extract_bank("tf_efficientnet_lite0", 64, pairs, tmp_path / "b.npz")
    values = dict(cache=str(cache), out=str(tmp_path / "lp"), backbone="tf_efficientnet_lite0")
    values.update(pretrained="offline", input_size=64, epochs=0, linear_probe_init=True)
    values.update(feature_taps=["block4", "head"], probe_features=str(tmp_path / "b.npz"))
    values.update(progress=False, tensorboard=False)
    card = train(load_config(None, values))
    assert card["stopped"] == "linear probe only" and card["epochs_run"] == 0
    assert card["linear_probe"]["features"] == str(tmp_path / "b.npz")
    model, _, _ = load_checkpoint(tmp_path / "lp")
    untouched = create_model("tf_efficientnet_lite0", pretrained="offline")
    assert torch.equal(model.backbone.conv_head.weight, untouched.backbone.conv_head.weight)
    # the head is the probe on the bank: its logits on the bank's features are the model's
    features = bank.select(["block4:avg", "head:avg"], [pairs[3][0]])
    weight = model.fracture_head.weight.detach().numpy()[0]
    bias = model.fracture_head.bias.item()
    from edge_app.preprocess import preprocess
    from edge_app.radiograph import load_radiograph
    from train.registry import preprocessing_for

    x = preprocess(
        load_radiograph(pairs[3][1]).pixels,
        preprocessing_for("tf_efficientnet_lite0", "offline", 64),
    )[0]
    with torch.no_grad():
        logit = model(torch.from_numpy(x)[None, None]).item()
    assert abs((features @ weight)[0] + bias - logit) < 1e-3 * max(1.0, abs(logit))
    with pytest.raises(ValueError, match="needs tf_efficientnet_lite0@96"):
        train(load_config(None, dict(values, input_size=96, out=str(tmp_path / "x"))))


def test_top_finetune_refuses_to_choose_on_a_missing_site(tmp_path, capsys):
    from fracture_edge.cli import main

    argv = ["top-finetune", "--bank", str(tmp_path / "b.npz"), "--split", str(tmp_path / "s.csv")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "--choose site needs --site-bank" in capsys.readouterr().err


def test_a_plan_feature_bank_needs_its_data_split_and_size(tmp_path):
    from train.plan import PlanError, load_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "cache: {path: cache/x}\nfeatures:\n  - {path: b.npz, size: 64}\nruns:\n  - name: a\n"
    )
    with pytest.raises(PlanError, match="feature bank needs path, data, split and size"):
        load_plan(plan)
