"""Grad-CAM: target layers per backbone, the Grad-CAM == CAM identity, hooks, memory, metrics."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402

from train.gradcam import (  # noqa: E402
    BinaryFractureTarget,
    UnsupportedBackboneError,
    explain,
    explainer,
    target_layer,
)
from train.localisation import cam_agreement, pointing_game, pointing_game_score  # noqa: E402
from train.models import BACKBONES, create_model  # noqa: E402


def _model(name: str, seed: int = 0):
    with torch.random.fork_rng():  # seeded locally, the global generator is left alone
        torch.manual_seed(seed)
        return create_model(name, pretrained=None, in_chans=1).eval()


def _images(batch: int = 2, size: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, size, size, generator=generator)


def _hook_count(module) -> int:
    return sum(
        len(hooks)
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
        )
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; on shared cores, OpenMP contention costs ~10×."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    return {name: _model(name) for name in ("custom_cnn", "resnet18", "mobilenetv3_small_100")}


@pytest.mark.parametrize("name", BACKBONES)
def test_target_layer_outputs_the_feature_map(models, name):
    model = models[name] if name in models else _model(name)
    layer = target_layer(model)
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.clone()))
    try:
        with torch.no_grad():
            features = model.features(_images(batch=1))
    finally:
        handle.remove()
    assert len(seen) == 1, f"{name}: the target layer ran {len(seen)} times"
    assert seen[0].shape == features.shape
    assert torch.equal(seen[0], features)


def test_unknown_backbone_asks_for_target_layers():
    model = _model("custom_cnn")
    model.backbone = torch.nn.Identity()
    with pytest.raises(UnsupportedBackboneError, match="target_layers"):
        target_layer(model)


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
@pytest.mark.parametrize("name", ["resnet18", "custom_cnn"])
def test_explain_shape_and_range(models, name, method):
    heatmaps = explain(models[name], _images(batch=2), method=method)
    assert heatmaps.shape == (2, 64, 64)
    assert heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


@pytest.mark.parametrize("method", ["gradcam++", "hirescam"])
def test_other_methods_run(models, method):
    heatmaps = explain(models["custom_cnn"], _images(batch=1), method=method, sign=-1)
    assert heatmaps.shape == (1, 64, 64)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_unknown_method_lists_valid_ones(models):
    with pytest.raises(ValueError, match="gradcam, gradcam\\+\\+, hirescam, eigencam"):
        explainer(models["custom_cnn"], method="scorecam")


@pytest.mark.parametrize(
    ("name", "size"), [("custom_cnn", 64), ("resnet18", 128), ("mobilenetv3_small_100", 128)]
)
def test_gradcam_equals_relu_cam_for_gap_linear_head(models, name, size):
    model = models[name]
    images = _images(batch=2, size=size)
    with torch.no_grad():
        cam = model.class_activation_map(images).numpy()
    assert cam.shape[1:] == (4, 4)
    # Both signs present, so the ReLU matters and the comparison is not trivial.
    assert (cam > 0).any() and (cam < 0).any()
    for method in ("gradcam", "hirescam"):
        for sign in (1, -1):
            # The normalisation and resize pytorch-grad-cam applies (per layer, then overall).
            expected = scale_cam_image(scale_cam_image(np.maximum(sign * cam, 0), (size, size)))
            heatmaps = explain(model, images, method=method, sign=sign)
            # float32 sums over up to 960 channels in a different order: ~1e-5 apart.
            np.testing.assert_allclose(
                heatmaps, expected, atol=1e-4, err_msg=f"{name} {method} sign={sign}"
            )


def test_binary_target():
    logits = torch.tensor([2.0, -3.0])
    assert BinaryFractureTarget(+1)(logits[1]).item() == -3.0
    assert BinaryFractureTarget(-1)(logits[1]).item() == 3.0
    assert BinaryFractureTarget(-1)(logits[:1]).item() == -2.0  # a (batch, 1) output's row
    with pytest.raises(ValueError, match="single fracture logit"):
        BinaryFractureTarget()(logits)
    with pytest.raises(ValueError, match="sign"):
        BinaryFractureTarget(0)


def test_hooks_released_after_the_block(models):
    model = models["custom_cnn"]
    layer = target_layer(model)
    before = _hook_count(layer)
    with explainer(model) as explain_batch:
        assert _hook_count(layer) > before
        explain_batch(_images(batch=1))
    assert _hook_count(layer) == before


def test_hooks_released_and_exception_propagates(models):
    # BaseCAM.__exit__ alone would swallow an IndexError (with a print).
    model = models["custom_cnn"]
    layer = target_layer(model)
    before = _hook_count(layer)
    with pytest.raises(IndexError), explainer(model):
        raise IndexError("raised inside the block")
    assert _hook_count(layer) == before


def test_model_state_restored(models):
    model = models["custom_cnn"]
    model.train()
    gradients = [torch.full_like(parameter, 7.0) for parameter in model.parameters()]
    for parameter, gradient in zip(model.parameters(), gradients, strict=True):
        parameter.grad = gradient
    running_mean = model.backbone.features[1].running_mean.clone()
    try:
        with torch.no_grad():  # explaining needs gradients even when the caller disabled them
            heatmaps = explain(model, _images(batch=2))
        assert heatmaps.shape == (2, 64, 64)
        assert model.training and all(module.training for module in model.modules())
        assert all(
            parameter.grad is gradient
            for parameter, gradient in zip(model.parameters(), gradients, strict=True)
        )
        assert torch.equal(model.backbone.features[1].running_mean, running_mean)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    explain(model, _images(batch=1))
    assert not model.training


def test_explainer_is_only_usable_inside_its_block(models):
    session = explainer(models["custom_cnn"])
    with pytest.raises(RuntimeError, match="with-block"):
        session(_images(batch=1))


def _live_tensors() -> int:
    gc.collect()
    # issubclass on the type: isinstance would touch lazy module proxies and warn.
    return sum(issubclass(type(value), torch.Tensor) for value in gc.get_objects())


def test_hundred_explanations_keep_memory_flat(models):
    model = models["custom_cnn"]
    layer = target_layer(model)
    images = _images(batch=1, size=32)
    for _ in range(5):  # warm-up: lazily created caches and allocator state
        explain(model, images)
    tensors_before = _live_tensors()
    objects_before = len(gc.get_objects())
    for _ in range(100):
        explain(model, images)
        assert _hook_count(layer) == 0
    # A leak of one tensor (activation, gradient or graph) per explanation would add >= 100.
    assert _live_tensors() - tensors_before <= 5
    assert len(gc.get_objects()) - objects_before < 100


# Pointing game on an 8 × 8 map (dyadic coordinates, exact in floating point): the maximum at
# row 2, column 5 is the point (5.5, 2.5) in pixels, (0.6875, 0.3125) normalised.
def _peak(rows: int = 8, columns: int = 8, at=(2, 5)) -> np.ndarray:
    heatmap = np.zeros((rows, columns))
    heatmap[at] = 1.0
    return heatmap


def test_pointing_game_hit_miss_and_no_boxes():
    assert pointing_game(_peak(), [(0.625, 0.25, 0.75, 0.375)]) is True
    assert pointing_game(_peak(), [(0.0, 0.0, 0.5, 0.5)]) is False
    assert pointing_game(_peak(), [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5)]) is True
    assert pointing_game(_peak(), []) is None
    # Boxes are closed: a corner exactly on the point hits.
    assert pointing_game(_peak(), [(0.6875, 0.3125, 1.0, 1.0)]) is True


def test_pointing_game_tolerance():
    left = [(0.0, 0.0, 0.5, 0.5)]  # x in [0, 4] px: 1.5 px from the point
    assert pointing_game(_peak(), left, tolerance_pixels=0) is False
    assert pointing_game(_peak(), left, tolerance_pixels=1) is False
    assert pointing_game(_peak(), left, tolerance_pixels=1.5) is True
    lower_left = [(0.0, 0.5, 0.5, 1.0)]  # 1.5 px left and 1.5 px below: sqrt(4.5) = 2.121 px
    assert pointing_game(_peak(), lower_left, tolerance_pixels=2) is False
    assert pointing_game(_peak(), lower_left, tolerance_pixels=2.2) is True


def test_pointing_game_keeps_x_and_y_apart():
    heatmap = _peak(rows=4, columns=8, at=(1, 6))  # point (6.5, 1.5) px = (0.8125, 0.375)
    assert pointing_game(heatmap, [(0.75, 0.25, 0.875, 0.5)]) is True
    assert pointing_game(heatmap, [(0.25, 0.75, 0.5, 0.875)]) is False  # the transposed box


def test_pointing_game_ties_must_all_hit():
    heatmap = _peak()
    heatmap[6, 1] = 1.0
    assert pointing_game(heatmap, [(0.625, 0.25, 0.75, 0.375)]) is False
    assert pointing_game(heatmap, [(0.625, 0.25, 0.75, 0.375), (0.0, 0.75, 0.25, 1.0)]) is True
    assert pointing_game(np.zeros((8, 8)), [(0.0, 0.0, 0.5, 1.0)]) is False


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(10, 10, 50, 50)], "normalised"),
        ([(0.5, 0.1, 0.2, 0.4)], "x0 <= x1"),
        ([(0.1, 0.2, 0.3)], "x0, y0, x1, y1"),
    ],
)
def test_pointing_game_rejects_bad_boxes(boxes, message):
    with pytest.raises(ValueError, match=message):
        pointing_game(_peak(), boxes)


def test_pointing_game_rejects_bad_heatmaps_and_tolerance():
    with pytest.raises(ValueError, match="H, W"):
        pointing_game(np.zeros((1, 8, 8)), [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(np.full((8, 8), np.nan), [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(_peak(), [(0, 0, 1, 1)], tolerance_pixels=-1)


def test_pointing_game_score():
    heatmaps = [_peak(), _peak(), _peak()]
    boxes = [[(0.625, 0.25, 0.75, 0.375)], [], [(0.0, 0.0, 0.5, 0.5)]]
    assert pointing_game_score(heatmaps, boxes) == {"hits": 1, "evaluated": 2, "rate": 0.5}
    assert pointing_game_score(heatmaps, boxes, tolerance_pixels=1.5)["rate"] == 1.0
    empty = pointing_game_score(heatmaps, [[], [], []])
    assert (empty["hits"], empty["evaluated"]) == (0, 0) and math.isnan(empty["rate"])
    with pytest.raises(ValueError, match="one box list"):
        pointing_game_score(heatmaps, boxes[:2])


def test_cam_agreement_identical_maps():
    heatmap = np.random.default_rng(0).random((7, 7))
    agreement = cam_agreement(heatmap, heatmap.copy())
    assert agreement["pearson"] == pytest.approx(1.0)
    assert agreement["top10_iou"] == 1.0


def test_cam_agreement_disjoint_maps():
    left, right = np.zeros((10, 10)), np.zeros((10, 10))
    left[:, :3], right[:, 7:] = 1.0, 1.0
    agreement = cam_agreement(left, right)
    # Two binary maps, 30 % ones each, never together: (0 - 0.09) / (0.3 * 0.7) = -3/7.
    assert agreement["pearson"] == pytest.approx(-3 / 7)
    assert agreement["top10_iou"] == 0.0


def test_cam_agreement_partial_overlap_and_constant_map():
    first = np.arange(100.0).reshape(10, 10)  # hottest 10 %: pixels 90..99
    second = ((np.arange(100) + 5) % 100).reshape(10, 10).astype(float)  # pixels 85..94
    assert cam_agreement(first, second)["top10_iou"] == pytest.approx(5 / 15)
    assert math.isnan(cam_agreement(first, np.ones((10, 10)))["pearson"])


def test_cam_agreement_resizes_to_the_larger_map():
    small = np.zeros((4, 4))
    small[0, 0] = 1.0
    large = torch.nn.functional.interpolate(
        torch.from_numpy(small)[None, None], size=(16, 16), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert cam_agreement(small, large) == cam_agreement(large, small)
    assert cam_agreement(small, large)["pearson"] == pytest.approx(1.0)
    assert cam_agreement(small, large)["top10_iou"] == 1.0


def test_the_numpy_bilinear_resize_matches_torch():
    from train.localisation import _resized

    heatmap = np.random.default_rng(0).random((5, 7))
    for shape in ((160, 160), (11, 3), (5, 7), (2, 2)):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(heatmap)[None, None], size=shape, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        np.testing.assert_allclose(_resized(heatmap, shape), expected, atol=1e-12)
