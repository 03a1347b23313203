"""Training plans: one YAML file of runs, one command, cards that name the command that
reproduces them; deadlines, fp16 weights and the preprocessing object in every card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("yaml")

from train.plan import PlanError, load_plan, run_plan, selected_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

COMMON = """
defaults:
  backbone: custom_cnn
  input_size: 32
  epochs: 2
  batch_size: 8
  lr: 0.003
  progress: false
  tensorboard: false
  drop_rate: 0.0
  device: cpu
"""


def _write(tmp_path: Path, cache: Path, runs: str, extra: str = "") -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(
        f"description: a test plan\ncache:\n  path: {cache}\nout: {tmp_path / 'out'}\n"
        + extra
        + COMMON
        + "runs:\n"
        + runs
    )
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_training_cache):
    return tiny_training_cache(tmp_path_factory.mktemp("plan-cache"))


def test_teachers_named_after_runs_become_their_checkpoints(tmp_path, cache):
    path = _write(
        tmp_path,
        cache,
        "  - name: teacher\n  - name: student\n    teachers: [teacher]\n"
        "  - name: fixed\n    teacher_logits: teacher\n",
    )
    plan = load_plan(path, {"epochs": 1})
    assert plan.names == ["teacher", "student", "fixed"]
    assert plan.run("student").teachers == [str(tmp_path / "out" / "teacher")]
    assert (
        plan.run("fixed").teacher_logits == f"{tmp_path / 'out' / 'teacher' / 'logits.csv'}:teacher"
    )
    assert all(run.epochs == 1 for run in plan.runs)  # the override reaches every run
    assert plan.run("student").out == str(tmp_path / "out" / "student")
    # --only a student also trains the teacher it needs, but not the unrelated run
    assert selected_runs(plan, ["student"]) == ["teacher", "student"]


@pytest.mark.parametrize(
    "runs,message",
    [
        ("  - name: a\n    teachers: [b]\n  - name: b\n", "runs after it"),
        ("  - name: a\n  - name: a\n", "unique"),
        ("  - name: a\n    colour: blue\n", "unknown keys"),
        ("  - backbone: custom_cnn\n", "needs a 'name'"),
        ("  - name: a\n    teacher_logits: nobody\n", "neither FILE.csv:COLUMN"),
        ("  - name: a\n    precision: fp8\n", "precision must be one of"),
    ],
)
def test_malformed_plans_are_refused_with_the_reason(tmp_path, cache, runs, message):
    with pytest.raises((PlanError, ValueError), match=message):
        load_plan(_write(tmp_path, cache, runs))


def test_a_plan_runs_and_every_card_names_the_command_that_reproduces_it(tmp_path, cache):
    path = _write(
        tmp_path,
        cache,
        "  - name: teacher\n    seed: 3\n  - name: student\n    teachers: [teacher]\n"
        "    weights_dtype: float16\n",
    )
    summary = run_plan(load_plan(path), flags=[])
    assert set(summary["runs"]) == {"teacher", "student"}
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["sha256"] == summary["sha256"]
    student = json.loads((tmp_path / "out" / "student" / "model_card.json").read_text())
    assert student["command"] == f"fracture-edge train --plan {path} --only student"
    assert student["plan"]["run"] == "student" and len(student["plan"]["sha256"]) == 64
    assert student["teachers"] == [str(tmp_path / "out" / "teacher")]
    assert student["weights_dtype"] == "float16"
    assert student["preprocessing"] == {
        "input_size": 32,
        "mean": 0.5,
        "std": 0.25,
        "fill": 0.0,
        "letterbox": True,
        "channels": 1,
    }
    low, high = student["metrics"]["val_auroc_ci95"]
    assert low is not None and high is not None
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "student" / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_tensor(key).dtype for key in weights.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    from train.checkpoints import load_checkpoint

    model, card, preprocessing = load_checkpoint(tmp_path / "out" / "student")
    assert preprocessing.to_card() == card["preprocessing"]


@pytest.mark.slow
def test_the_recorded_command_reproduces_the_run(tmp_path, cache):
    """Train through the CLI, then run the card's command again into another folder: the same
    logits (CPU training is deterministic for a fixed seed and thread count)."""
    path = _write(tmp_path, cache, "  - name: only\n    threads: 1\n")
    first = subprocess.run(
        [sys.executable, "-m", "fracture_edge.cli", "train", "--plan", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr
    card = json.loads((tmp_path / "out" / "only" / "model_card.json").read_text())
    command = card["command"].split()
    assert command[:3] == ["fracture-edge", "train", "--plan"]
    again = subprocess.run(
        [sys.executable, "-m", "fracture_edge.cli", *command[1:], "--out", str(tmp_path / "again")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr

    def logits(folder):
        lines = (folder / "only" / "logits.csv").read_text().splitlines()[1:]
        return np.array([float(line.split(",")[-1]) for line in lines])

    np.testing.assert_array_equal(logits(tmp_path / "out"), logits(tmp_path / "again"))


def test_a_run_past_its_deadline_stops_and_keeps_its_best_epoch(tmp_path, cache):
    path = _write(tmp_path, cache, "  - name: late\n    epochs: 50\n    deadline_minutes: 0.0001\n")
    summary = run_plan(load_plan(path))
    assert summary["runs"]["late"]["status"] == "deadline"
    card = json.loads((tmp_path / "out" / "late" / "model_card.json").read_text())
    assert card["epochs_run"] == 1 and card["best_epoch"] == 0


def test_a_missing_cache_is_built_from_the_plans_data_and_split(
    tmp_path, fracatlas_tree, atlas_image, make_radiograph
):
    images = [
        atlas_image(f"IMG{i:07d}.jpg", i % 2 == 1, pixels=make_radiograph(60, 50, i, i))
        for i in range(24)
    ]
    root = fracatlas_tree(tmp_path / "atlas", images)
    from train.datasets import open_dataset
    from train.splits import SplitConfig, make_split, write_split

    rows = make_split(list(open_dataset(root)), {}, SplitConfig(0.25, 0.25, seed=0))
    write_split(rows, tmp_path / "split.csv")
    cache = tmp_path / "built-cache"
    path = tmp_path / "plan.yaml"
    path.write_text(
        f"cache:\n  path: {cache}\n  data: {root}\n  split: {tmp_path / 'split.csv'}\n"
        f"  size: 32\n  format: png\nout: {tmp_path / 'out'}\n"
        + COMMON
        + "runs:\n  - name: one\n    epochs: 1\n"
    )
    run_plan(load_plan(path))
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["format"] == "png" and meta["size"] == 32
    assert sorted(p.suffix for p in (cache / "images").iterdir())[0] == ".png"


@pytest.mark.parametrize(
    "plan_file", sorted(Path(__file__).resolve().parents[2].glob("configs/*.yaml")), ids=str
)
def test_every_committed_plan_loads(plan_file):
    """The plans in configs/ name real TrainConfig fields, backbones and earlier teachers (a
    GPU plan is checked here, on the CPU, before a lease is spent on it)."""
    plan = load_plan(plan_file)
    assert plan.names and plan.cache
    for name in plan.names:
        if plan.probe(name) is None:
            run = plan.run(name)
            # epochs 0 is an LP-only run (the frozen floor), which needs the LP step
            assert run.run_name == name and (run.epochs >= 1 or run.linear_probe_init)
