"""Structured pruning: the model's contract, reloadable pruned checkpoints and the prune verb."""

from __future__ import annotations

import csv
import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("torch_pruning")

from compress.prune import IMPORTANCES, PruneReport, prune_model  # noqa: E402
from edge_app.errors import ModelCardError  # noqa: E402
from edge_app.preprocess import PreprocessConfig  # noqa: E402
from fracture_edge.cli import build_parser, main  # noqa: E402
from train.checkpoints import cache_logits, load_checkpoint, write_checkpoint  # noqa: E402
from train.models import create_model  # noqa: E402

SIZE = 64


def _randomise_batchnorm(model, seed: int = 0) -> None:
    """Trained-looking BatchNorm layers, so that reloading has statistics to get right."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            count = module.num_features
            module.weight.data = torch.rand(count, generator=generator) + 0.5
            module.bias.data = torch.randn(count, generator=generator) * 0.1
            module.running_mean = torch.randn(count, generator=generator) * 0.1
            module.running_var = torch.rand(count, generator=generator) + 0.5


def _card(name: str, model, input_size: int = SIZE, **extra) -> dict:
    return {
        "architecture": name,
        "aux_heads": {n: head.out_features for n, head in model.aux_heads.items()},
        "preprocessing": PreprocessConfig(input_size=input_size).to_card(),
        **extra,
    }


@pytest.fixture(scope="module", params=["tf_efficientnet_lite0", "mobilenetv2_100", "resnet18"])
def pruned_pair(request):
    """(name, model, the model pruned by half); depthwise, Conv2dSame and residual backbones."""
    torch.manual_seed(0)
    model = create_model(request.param, aux_heads={"region": 5}).eval()
    _randomise_batchnorm(model)
    return request.param, model, prune_model(model, 0.5, SIZE).eval()


@pytest.fixture()
def small_model():
    torch.manual_seed(0)
    model = create_model("custom_cnn").eval()
    _randomise_batchnorm(model)
    return model


# --------------------------------------------------------------------------- prune_model


def test_pruned_model_keeps_its_outputs_and_its_cam(pruned_pair):
    _, model, pruned = pruned_pair
    images = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        outputs = pruned.forward_all(images)
        features = pruned.features(images)
        cam = pruned.class_activation_map(images)
    assert outputs["fracture"].shape == (2,)
    assert outputs["region"].shape == (2, 5)
    channels = features.shape[1]
    assert features.ndim == 4 and channels < model.num_features
    assert channels == pruned.num_features == pruned.fracture_head.in_features
    assert channels == pruned.aux_heads["region"].in_features
    # GAP + linear still: the mean of the CAM plus the bias is the logit.
    expected = cam.mean((1, 2)) + pruned.fracture_head.bias
    assert torch.allclose(expected, outputs["fracture"], atol=1e-4)
    assert model.fracture_head.in_features == model.num_features  # the original is untouched


def test_pruning_removes_parameters_and_macs_in_channel_multiples(pruned_pair):
    _, model, pruned = pruned_pair
    report = PruneReport.measure(model, pruned, SIZE)
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    assert pruned.pruning["ratio"] == 0.5 and pruned.pruning["importance"] == "l2"
    assert pruned.pruning["channels"]
    assert all(count % 8 == 0 for count in pruned.pruning["channels"].values())


def test_pruned_checkpoint_reloads_with_identical_logits(pruned_pair, tmp_path):
    name, _, pruned = pruned_pair
    card = _card(name, pruned, pruning=pruned.pruning)
    write_checkpoint(tmp_path / "pruned", pruned.state_dict(), card)
    reloaded, reloaded_card, _ = load_checkpoint(tmp_path / "pruned")
    images = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(reloaded(images), pruned(images))
    assert reloaded.pruning == reloaded_card["pruning"] == pruned.pruning
    assert reloaded.num_features == pruned.num_features


def test_bn_scale_keeps_the_channels_with_the_largest_scales(small_model):
    first_norm = small_model.backbone.features[1]
    scales = torch.randperm(32).float() + 1
    first_norm.weight.data = scales.clone()
    pruned = prune_model(small_model, 0.5, 32, importance="bn_scale", round_to=1)
    kept = set(pruned.backbone.features[1].weight.tolist())
    assert kept == set(scales.sort(descending=True).values[:16].tolist())


def test_ratio_and_importance_are_checked_and_zero_changes_nothing(small_model):
    for ratio in (-0.1, 0.95, math.nan):
        with pytest.raises(ValueError, match=r"\[0, 0.9\]"):
            prune_model(small_model, ratio, 32)
    with pytest.raises(ValueError, match="bn_scale"):
        prune_model(small_model, 0.3, 32, importance="l1")
    assert prune_model(small_model, 0.0, 32) is small_model


def test_pruning_twice_records_both_passes_and_reloads(small_model, tmp_path):
    once = prune_model(small_model, 0.25, 32)
    twice = prune_model(once, 0.5, 32, importance="bn_scale")
    assert [p["ratio"] for p in twice.pruning["previous"]] == [0.25]
    write_checkpoint(tmp_path / "twice", twice.state_dict(), _card("custom_cnn", twice, 32))
    with pytest.raises(RuntimeError, match="size mismatch"):  # no pruning section: as before
        load_checkpoint(tmp_path / "twice")
    card = _card("custom_cnn", twice, 32, pruning=twice.pruning)
    write_checkpoint(tmp_path / "twice", twice.state_dict(), card)
    reloaded, _, _ = load_checkpoint(tmp_path / "twice")
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(images), twice(images))


def test_a_card_whose_channels_disagree_with_the_weights_is_refused(small_model, tmp_path):
    pruned = prune_model(small_model, 0.5, 32)
    name = next(iter(pruned.pruning["channels"]))
    pruning = {**pruned.pruning, "channels": {name: 1000}}
    card = _card("custom_cnn", pruned, 32, pruning=pruning)
    write_checkpoint(tmp_path / "bad", pruned.state_dict(), card)
    with pytest.raises(ModelCardError, match="do not belong together"):
        load_checkpoint(tmp_path / "bad")


# --------------------------------------------------------------------------- the prune verb


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_training_cache):
    """A tiny cache and an unpruned custom_cnn checkpoint with a Trainer-like card."""
    root = tmp_path_factory.mktemp("prune_cli")
    cache = tiny_training_cache(root / "cache")
    torch.manual_seed(0)
    model = create_model("custom_cnn")
    recipe = {"backbone": "custom_cnn", "input_size": 32, "lr": 3e-3, "epochs": 30, "out": "x"}
    card = _card("custom_cnn", model, 32, config={**recipe, "drop_rate": 0.0})
    return cache, write_checkpoint(root / "source", model.state_dict(), card)


def _prune_flags(cache, out, *extra) -> list[str]:
    return [
        "--out", str(out), "--cache", str(cache), "--limit", "24", "--batch-size", "8",
        "--no-progress", "--no-tensorboard", *extra,
    ]  # fmt: skip


def test_cli_prunes_distils_from_the_source_and_writes_a_reloadable_checkpoint(
    source, tmp_path, capsys
):
    cache, checkpoint = source
    out = tmp_path / "pruned"
    flags = _prune_flags(cache, out, "--epochs", "1")
    code = main(["prune", str(checkpoint), "--ratio", "0.5", *flags])
    printed = capsys.readouterr().out
    assert code == 0
    assert "parameters:" in printed and "MACs at 32 px" in printed
    card = json.loads((out / "model_card.json").read_text())
    assert card["pruning"]["ratio"] == 0.5 and card["initialisation"] == "pruned"
    assert card["teachers"] == [str(checkpoint)]  # the unpruned checkpoint teaches by default
    assert card["config"]["epochs"] == 1 and card["config"]["lr"] == 3e-3  # flag, then recipe
    assert card["pruning"]["report"]["params_after"] < card["pruning"]["report"]["params_before"]
    model, _, _ = load_checkpoint(out)
    assert model.num_features == 128
    # The reloaded model reproduces the logits the Trainer logged for its images.
    with open(out / "logits.csv", newline="") as handle:
        logged = {r["file"]: float(r[out.name]) for r in csv.DictReader(handle)}
    rows, recomputed = cache_logits([out], cache)
    pairs = [
        (logged[row["file"]], value)
        for row, value in zip(rows, recomputed[out.name], strict=True)
        if row["file"] in logged
    ]
    assert pairs and all(abs(a - b) < 1e-3 for a, b in pairs)


def test_cli_prune_with_zero_epochs_only_evaluates_and_writes(source, tmp_path, capsys):
    cache, checkpoint = source
    out = tmp_path / "pruned0"
    flags = _prune_flags(cache, out, "--epochs", "0", "--importance", "bn_scale")
    assert main(["prune", str(checkpoint), "--ratio", "0.3", *flags]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["best_epoch"] == -1 and card["teachers"] == []
    assert card["pruning"]["importance"] == "bn_scale"
    assert set(card["operating_points"]) == {"doubt", "fracture"}
    load_checkpoint(out)


def test_cli_prune_errors_are_messages_not_tracebacks(source, tmp_path, capsys):
    cache, checkpoint = source
    code = main(["prune", str(checkpoint), "--ratio", "1.5", *_prune_flags(cache, tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "[0, 0.9]" in err and "Traceback" not in err
    code = main(["prune", str(tmp_path / "nowhere"), "--ratio", "0.3", "--out", str(tmp_path)])
    assert code == 2 and "model_card.json" in capsys.readouterr().err


def test_cli_importance_choices_are_the_library_names():
    for name in IMPORTANCES:
        args = build_parser().parse_args(["prune", "x", "--ratio", "0.3", "--importance", name])
        assert args.importance == name
