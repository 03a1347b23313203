"""A student returned by a GPU run (fp16 weights + metrics.json) becomes a checkpoint folder."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from train.checkpoints import load_checkpoint  # noqa: E402
from train.gpu_experiment import save_student  # noqa: E402
from train.gpu_import import GpuImportError, import_student, main  # noqa: E402
from train.models import create_model  # noqa: E402

NAME = "student_custom_cnn_scratch"


@pytest.fixture
def gpu_run(tmp_path):
    """What train.gpu_experiment leaves behind for one student: metrics.json + fp16 weights."""
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = create_model("custom_cnn").eval()
    save_student(model, run / f"{NAME}.safetensors")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "meta.json").write_text(json.dumps({"split_id": "abc123", "fill": 0.0, "size": 96}))
    metrics = {
        "config": {"cache": str(cache), "size": "64", "seed": "1", "out": "/x", "limit": "None"},
        "device": "NVIDIA H200",
        "torch": "2.11.0+cu130",
        "models": {
            NAME: {
                "val_auroc": 0.81,
                "thresholds": {"doubt": 0.05, "fracture": 0.4},
                "test_auroc": 0.8,
                "test_auroc_ci95": [0.7, 0.9],
                "test_at_doubt": {"sensitivity": 0.95, "specificity": 0.3},
                "test_at_fracture": {"sensitivity": 0.7, "specificity": 0.8},
                "spec": {"backbone": "custom_cnn", "pretrained": None},
                "best_epoch": 3,
            },
            "student_skipped": {"skipped": "deadline"},
        },
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run, model


def test_import_writes_a_checkpoint_that_loads_and_reproduces_the_model(gpu_run, tmp_path):
    run, model = gpu_run
    out = import_student(run, run / f"{NAME}.safetensors", NAME, tmp_path / "ckpt", name="cnn_64")
    loaded, card, preprocessing = load_checkpoint(out)
    assert (card["name"], card["plan_name"]) == ("cnn_64", NAME)
    assert preprocessing.input_size == 64
    assert card["operating_points"] == {"doubt": 0.05, "fracture": 0.4}
    assert card["training_data"] == {"cache": str(tmp_path / "cache"), "split_id": "abc123"}
    assert card["metrics"]["val_auroc"] == 0.81 and card["best_epoch"] == 3
    assert card["trained_on"] == "NVIDIA H200, torch 2.11.0+cu130"
    assert "--size 64 --seed 1" in card["command"] and "--out" not in card["command"]
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():  # fp16 storage: equal to the fp16-rounded original
        expected = model.half().float()(image)
        assert torch.allclose(loaded(image), expected, atol=1e-4)


def test_import_names_the_trained_models_when_asked_for_another(gpu_run, tmp_path, capsys):
    run, _ = gpu_run
    with pytest.raises(GpuImportError, match=rf"has \['{NAME}'\]"):
        import_student(run, run / f"{NAME}.safetensors", "student_skipped", tmp_path / "c", None)
    code = main([str(tmp_path), "--weights", "x", "--model", NAME, "--out", str(tmp_path / "c")])
    assert code == 2 and "has no metrics.json" in capsys.readouterr().err
