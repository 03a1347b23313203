"""Export: the in-graph CAM, torch → ONNX → TFLite parity, quantised I/O, bundles."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
if importlib.util.find_spec("onnx2tf") is None:  # not imported: it loads TensorFlow
    pytest.skip("onnx2tf is not installed (the compress extra)", allow_module_level=True)
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402

from compress.export import (  # noqa: E402
    CAM_OUTPUT,
    LOGIT_OUTPUT,
    DeployableNet,
    ExportError,
    cam_correlation,
    convert_tflite,
    export_bundle,
    export_onnx,
    onnx_outputs,
    torch_outputs,
)
from edge_app.tflite import ModelFileError, TFLiteModel  # noqa: E402
from train.gradcam import explain  # noqa: E402
from train.models import create_model  # noqa: E402

SIZE = 64


def _model(name: str = "custom_cnn", aux: dict | None = None, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model(name, pretrained=None, aux_heads=aux).eval()
        # Random BN statistics so that eval-mode BN is not the identity.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _images(count: int = 4, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, size, size, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """custom_cnn with a region head, converted once in every mode (int8 calibrated)."""
    work = tmp_path_factory.mktemp("export")
    model = _model(aux={"region": 5})
    deployable = DeployableNet(model)
    onnx_path = export_onnx(deployable, work / "model.onnx", SIZE)
    files = convert_tflite(onnx_path, work / "tflite", calibration=_images(32, seed=1))
    return model, deployable, onnx_path, files


def test_in_graph_cam_is_the_head_weighted_feature_map():
    model = _model("mobilenetv2_100")
    images = torch.from_numpy(_images(size=96)).permute(0, 3, 1, 2)
    deployable = DeployableNet(model)
    with torch.no_grad():
        logit, cam = deployable(images)
        expected = model.class_activation_map(images)
        # GAP + linear: the map's mean plus the bias is the logit.
        rebuilt = cam.mean(1) + model.fracture_head.bias
    np.testing.assert_allclose(cam.reshape(expected.shape), expected, atol=1e-5)
    np.testing.assert_allclose(rebuilt, logit[:, 0], atol=1e-5)


def test_tflite_cam_equals_pytorch_grad_cam(converted):
    """The map the phone gets from invoke() is Grad-CAM of the torch model (ReLU, normalised)."""
    model, deployable, _, files = converted
    images = _images(2)
    shapes = deployable.output_shapes(SIZE)
    grid = shapes["cam_shape"]
    tflite = TFLiteModel(files["float32"], outputs=shapes["outputs"]).run_many(images)
    in_graph = tflite[CAM_OUTPUT].reshape(-1, *grid)
    assert (in_graph > 0).any() and (in_graph < 0).any()  # the ReLU matters
    expected_from_graph = scale_cam_image(scale_cam_image(np.maximum(in_graph, 0), (SIZE, SIZE)))
    grad_cam = explain(model, torch.from_numpy(images).permute(0, 3, 1, 2), method="gradcam")
    np.testing.assert_allclose(grad_cam, expected_from_graph, atol=1e-4)


def test_float32_parity_torch_onnx_tflite(converted):
    model, deployable, onnx_path, files = converted
    shapes = deployable.output_shapes(SIZE)["outputs"]
    images = _images(8, seed=3)
    reference = torch_outputs(deployable, images)
    through_onnx = onnx_outputs(onnx_path, images)
    through_tflite = TFLiteModel(files["float32"], outputs=shapes).run_many(images)
    for name in reference:
        np.testing.assert_allclose(through_onnx[name], reference[name], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(through_tflite[name], reference[name], atol=1e-4, rtol=1e-4)
    probability = 1 / (1 + np.exp(-reference[LOGIT_OUTPUT]))
    tflite_probability = 1 / (1 + np.exp(-through_tflite[LOGIT_OUTPUT]))
    assert np.abs(probability - tflite_probability).max() <= 1e-4
    assert set(through_tflite) == {LOGIT_OUTPUT, CAM_OUTPUT, "region_logits"}


def test_every_mode_converts_and_runs(converted):
    _, deployable, _, files = converted
    assert set(files) == {"float32", "float16", "dynamic_int8", "int8", "int8_io"}
    shapes = deployable.output_shapes(SIZE)["outputs"]
    images = _images(4, seed=5)
    reference = torch_outputs(deployable, images)
    spread = reference[LOGIT_OUTPUT].std()
    for mode, path in files.items():
        model = TFLiteModel(path, outputs=shapes)
        outputs = model.run_many(images)
        assert outputs[LOGIT_OUTPUT].dtype == np.float32
        # Quantised modes stay close to the float logits (within the spread across images).
        error = np.abs(outputs[LOGIT_OUTPUT] - reference[LOGIT_OUTPUT]).max()
        assert error < max(0.5 * spread, 0.05), (mode, error, spread)
        correlation = cam_correlation(outputs[CAM_OUTPUT], reference[CAM_OUTPUT])
        assert np.nanmin(correlation) > 0.9, (mode, correlation)


def test_int8_io_model_quantises_inside_the_wrapper(converted):
    _, deployable, _, files = converted
    model = TFLiteModel(files["int8_io"], outputs=deployable.output_shapes(SIZE)["outputs"])
    assert model.input_dtype == np.int8
    outputs = model(_images(1))
    assert outputs[LOGIT_OUTPUT].dtype == np.float32


def test_output_shape_collision_is_refused():
    # A 2×2 CAM grid has four cells, as does a four-class head: the runtime could not tell them
    # apart by shape.
    model = _model(aux={"region": 4})
    with pytest.raises(ExportError, match="share the shape"):
        DeployableNet(model).output_shapes(32)


def test_runtime_rejects_wrong_shape_and_missing_outputs(converted):
    _, deployable, _, files = converted
    shapes = deployable.output_shapes(SIZE)["outputs"]
    model = TFLiteModel(files["float32"], outputs=shapes)
    with pytest.raises(ValueError, match="takes input of shape"):
        model(np.zeros((1, SIZE + 1, SIZE, 1), np.float32))
    with pytest.raises(ModelFileError, match="exactly one output"):
        TFLiteModel(files["float32"], outputs={"heatmap": [999]})


def test_runtime_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        TFLiteModel(tmp_path / "absent.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelFileError, match="not a loadable TFLite model"):
        TFLiteModel(corrupt)


def test_opset_below_17_is_refused(tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(_model(), tmp_path / "m.onnx", SIZE, opset=13)


def test_int8_without_calibration_data_is_refused(tmp_path):
    with pytest.raises(ExportError, match="needs evaluation data"):
        export_bundle(None, tmp_path / "b", mode="int8", net=_model(), card={})


@pytest.mark.slow
def test_bundle_scored_on_the_original_films(
    tmp_path, fracatlas_tree, atlas_image, make_radiograph
):
    """The whole export on a tiny FracAtlas tree: int8 calibrated on training films, the file
    itself scored on the original val/test films through the app's loader; one card."""
    from train.datasets import open_dataset
    from train.splits import SplitConfig, make_split, write_split

    images = [
        atlas_image(f"IMG{i:07d}.jpg", i % 3 == 0, pixels=make_radiograph(70, 50, i % 3, i))
        for i in range(36)
    ]
    root = fracatlas_tree(tmp_path / "atlas", images)
    rows = make_split(list(open_dataset(root)), {}, SplitConfig(0.25, 0.25, seed=0))
    write_split(rows, tmp_path / "split.csv")
    model = _model()
    card = {
        "name": "tiny",
        "architecture": "custom_cnn",
        "labels": ["no_fracture", "fracture"],
        "preprocessing": {"input_size": SIZE, "mean": 0.5, "std": 0.25, "fill": 0.0},
        "training_data": {"split_id": "synthetic"},
    }
    result = export_bundle(
        None,
        tmp_path / "bundle",
        mode="int8",
        split=tmp_path / "split.csv",
        data=root,
        net=model,
        card=card,
        calibration_images=8,
        parity_images=4,
    )
    written = json.loads((tmp_path / "bundle" / "model_card.json").read_text())
    assert written == json.loads(json.dumps(result.card))
    import hashlib

    tflite = (tmp_path / "bundle" / "model.tflite").read_bytes()
    assert written["model_sha256"] == hashlib.sha256(tflite).hexdigest()
    assert written["model_bytes"] == len(tflite)
    assert written["quantization"] == "int8"
    assert written["input"]["shape"] == [1, SIZE, SIZE, 1]
    assert written["calibration"]["split"] == "train"
    assert written["calibration"]["read_from"] == "original films"
    assert "original films" in written["metrics"]["measured_on"]
    assert written["evaluation_data"]["split"] == str(tmp_path / "split.csv")
    assert 0 <= written["metrics"]["test_auroc"] <= 1
    assert len(written["metrics"]["test_auroc_ci95"]) == 2
    assert written["operating_points"]["doubt"] <= written["operating_points"]["fracture"]
    assert written["parity"]["max_abs_probability_torch_vs_tflite_float32"] <= 1e-4
    assert math.isfinite(written["parity"]["val_auroc_drop"])


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_shipped_student_parity_on_real_radiographs(tmp_path, fracatlas_root):
    """The shipped bundle's source checkpoint on real validation radiographs, loaded as the app
    loads them: torch vs ONNX vs TFLite float32 within 1e-4 in probability."""
    import csv

    from edge_app.preprocess import preprocess
    from edge_app.radiograph import load_radiograph
    from edge_app.runtime import DEFAULT_BUNDLE
    from train.checkpoints import load_checkpoint

    repo = Path(__file__).parents[2]
    card = json.loads((DEFAULT_BUNDLE / "model_card.json").read_text())
    checkpoint = repo / card["source_checkpoint"]["path"]
    with open(repo / "splits/fracatlas-bd42f929f115.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "val"][:12]
    net, card, config = load_checkpoint(checkpoint)
    images = np.stack(
        [
            preprocess(load_radiograph(fracatlas_root / row["relpath"]).pixels, config)[0]
            for row in rows
        ]
    )[..., None]
    deployable = DeployableNet(net)
    onnx_path = export_onnx(deployable, tmp_path / "lite0.onnx", config.input_size)
    files = convert_tflite(onnx_path, tmp_path / "tflite")
    reference = torch_outputs(deployable, images)
    shapes = deployable.output_shapes(config.input_size)["outputs"]
    tflite = TFLiteModel(files["float32"], outputs=shapes).run_many(images)
    onnx = onnx_outputs(onnx_path, images)

    def probability(outputs):
        return 1 / (1 + np.exp(-outputs[LOGIT_OUTPUT].astype(np.float64)))

    # Real radiographs, so the probabilities spread out (not all saturated at 0 or 1).
    assert probability(reference).std() > 0.05
    assert np.abs(probability(onnx) - probability(reference)).max() <= 1e-4
    assert np.abs(probability(tflite) - probability(reference)).max() <= 1e-4
    assert np.nanmin(cam_correlation(tflite[CAM_OUTPUT], reference[CAM_OUTPUT])) > 0.9999


@pytest.mark.slow
def test_the_committed_tiny_bundle_is_what_its_script_makes(tmp_path, tiny_bundle_script):
    """tests/data/tiny-bundle is regenerated by its script: same outputs, same card contract."""
    from edge_app.card import read_card

    committed = Path(__file__).parents[1] / "data" / "tiny-bundle"
    fresh = tiny_bundle_script.make(tmp_path / "fresh")
    images = _images(6, seed=3)
    shapes = read_card(committed, "bundle")["outputs"]
    old = TFLiteModel(committed / "model.tflite", outputs=shapes).run_many(images)
    new = TFLiteModel(fresh / "model.tflite", outputs=shapes).run_many(images)
    for name in shapes:
        np.testing.assert_allclose(new[name], old[name], atol=1e-5)
    volatile = {"name", "export", "model_sha256", "source_checkpoint"}  # name: the folder
    old_card, new_card = read_card(committed, "bundle"), read_card(fresh, "bundle")
    assert {k: v for k, v in old_card.items() if k not in volatile} == {
        k: v for k, v in new_card.items() if k not in volatile
    }
