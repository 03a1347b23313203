"""The Optuna search: constraints, early stopping, shared storage across worker processes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
torch = pytest.importorskip("torch")
pytest.importorskip("ai_edge_litert")
if importlib.util.find_spec("onnx2tf") is None:  # not imported: it loads TensorFlow
    pytest.skip("onnx2tf is not installed (the compress extra)", allow_module_level=True)

from compress import tune  # noqa: E402
from compress.tune import TuneError, TuneSettings, select  # noqa: E402

SPACE = {
    "student": optuna.distributions.CategoricalDistribution(["a", "b"]),
    "input_size": optuna.distributions.CategoricalDistribution([160, 224]),
    "prune_ratio": optuna.distributions.CategoricalDistribution([0.0, 0.3]),
    "mode": optuna.distributions.CategoricalDistribution(["float16", "int8"]),
}


def _study(values):
    study = optuna.create_study(directions=list(tune.DIRECTIONS))
    for auroc, latency, size in values:
        params = {"student": "a", "input_size": 160, "prune_ratio": 0.0, "mode": "int8"}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=SPACE, values=[auroc, latency, size]
            )
        )
    return study


def test_select_takes_the_best_auroc_within_the_constraints():
    study = _study([(0.92, 12.0, 4.0), (0.90, 7.5, 3.9), (0.91, 7.9, 6.0), (0.88, 5.0, 2.0)])
    assert select(study, max_latency_ms=8, max_size_mb=5).number == 1
    assert select(study, max_latency_ms=8, max_size_mb=None).number == 2
    assert select(study, None, None).number == 0


def test_select_says_when_nothing_fits():
    study = _study([(0.92, 12.0, 4.0)])
    with pytest.raises(TuneError, match="none of 1 completed trials"):
        select(study, max_latency_ms=8, max_size_mb=5)


def test_hopeless_trial_is_pruned_before_conversion(tmp_path, monkeypatch):
    settings = TuneSettings(cache="unused", students=["/x/a"], out=str(tmp_path))
    study = optuna.create_study(directions=list(tune.DIRECTIONS))
    good = optuna.trial.create_trial(
        params={"student": "a", "input_size": 160, "prune_ratio": 0.0, "mode": "int8"},
        distributions=SPACE,
        values=[0.9, 8.0, 4.0],
        user_attrs={"screen_auroc": 0.90, "macs": 1000},
    )
    study.add_trial(good)
    monkeypatch.setattr(tune, "prepare_student", lambda p, s, w: (None, {}, Path("ckpt")))
    monkeypatch.setattr(tune, "screen_auroc", lambda net, card, s: 0.80)
    monkeypatch.setattr("compress.prune.count_params_and_macs", lambda net, size: (1, 2000))

    def no_conversion(*args, **kwargs):
        raise AssertionError("a hopeless trial must stop before the export")

    monkeypatch.setattr("compress.export.export_onnx", no_conversion)
    settings.sizes, settings.prune_ratios, settings.modes = [160], [0.0], ["int8"]
    settings.students = ["/x/a"]
    study.optimize(lambda trial: tune.run_trial(trial, settings), n_trials=1)
    last = study.trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED
    assert last.user_attrs["screen_auroc"] == 0.80


def test_a_cheaper_trial_is_never_stopped_for_lower_auroc():
    """Multi-objective: a smaller model may lose AUROC and still be on the Pareto front."""
    study = optuna.create_study(directions=list(tune.DIRECTIONS))
    params = {"student": "a", "input_size": 224, "prune_ratio": 0.0, "mode": "int8"}
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=SPACE,
            values=[0.9, 12.0, 4.0],
            user_attrs={"screen_auroc": 0.90, "macs": 1000},
        )
    )
    assert tune.dominating_trial(study, 5, "int8", 0.80, 500, 0.03) is None  # cheaper
    assert tune.dominating_trial(study, 5, "float16", 0.80, 2000, 0.03) is None  # other mode
    assert tune.dominating_trial(study, 5, "int8", 0.88, 2000, 0.03) is None  # within margin
    assert tune.dominating_trial(study, 5, "int8", 0.80, 2000, 0.03).number == 0


def test_distinct_student_names_are_required():
    settings = TuneSettings(cache="c", students=["/a/same", "/b/same"])
    study = optuna.create_study(directions=list(tune.DIRECTIONS))
    with pytest.raises(TuneError, match="distinct names"):
        tune.suggest(study.ask(), settings)


@pytest.mark.slow
def test_two_workers_share_one_storage(tmp_path, tiny_student):
    cache, student = tiny_student
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [
        sys.executable, "-m", "fracture_edge.cli", "tune", "--cache", str(cache),
        "--students", str(student), "--trials", "1", "--study", "shared",
        "--storage", storage, "--out", str(tmp_path / "out"), "--sizes", "64",
        "--prune-ratios", "0", "--modes", "float32", "--latency-runs", "5",
        "--calibration-images", "8",
    ]  # fmt: skip
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]  # fmt: skip
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr.decode()[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    done = tune.completed(study)
    assert sorted(t.number for t in done) == [0, 1]
    assert len({t.user_attrs["worker"] for t in done}) == 2  # one trial from each process
    for trial in done:
        assert 0.0 <= trial.values[0] <= 1.0 and trial.values[1] > 0
        artifact = Path(trial.user_attrs["artifact"])
        assert trial.values[2] == pytest.approx(artifact.stat().st_size / 1e6)

    # A third call with --trials 0 resumes the study: select and report, no new trial.
    result = subprocess.run(
        [*command[:6], *command[8:], "--trials", "0", "--max-size-mb", "100"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chosen: trial" in result.stdout
    assert len(optuna.load_study(study_name="shared", storage=storage).trials) == 2
    rows = json.loads((tmp_path / "out" / "shared" / "trials.json").read_text())
    assert {row["trial"] for row in rows} == {0, 1}
    assert (tmp_path / "out" / "shared" / "pareto.png").stat().st_size > 5000


def test_worker_that_loses_the_schema_race_retries_and_joins(tmp_path, monkeypatch):
    """Two workers on a fresh storage race while RDBStorage stamps the schema; the loser's
    sqlalchemy IntegrityError (the duplicate alembic_version row) must not end its run."""
    url = f"sqlite:///{tmp_path / 'race.db'}"

    def settings(name):
        return TuneSettings(cache="c", students=["s"], study=name, storage=url, out=str(tmp_path))

    real_storage = tune._storage
    calls = []

    def racing_storage(settings):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("UNIQUE constraint failed: alembic_version.version_num")
        return real_storage(settings)

    monkeypatch.setattr(tune, "_storage", racing_storage)
    monkeypatch.setattr(tune.time, "sleep", lambda seconds: None)
    study = tune.open_study(settings("race"))
    assert len(calls) == 2 and study.study_name == "race"

    def broken_storage(settings):
        raise RuntimeError("disk I/O error")  # not a race: reported at once, no retry

    monkeypatch.setattr(tune, "_storage", broken_storage)
    with pytest.raises(RuntimeError, match="disk I/O"):
        tune.open_study(settings("other"))


def test_parse_enqueue():
    params = tune.parse_enqueue("student=lite0, input_size=192,prune_ratio=0.1,mode=int8")
    assert params == {"student": "lite0", "input_size": 192, "prune_ratio": 0.1, "mode": "int8"}
    with pytest.raises(ValueError, match="no parameter 'size'"):
        tune.parse_enqueue("size=192")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        tune.parse_enqueue("student")


def test_remeasured_latency_drives_the_choice_and_the_front():
    study = _study([(0.92, 9.0, 4.0), (0.90, 7.0, 4.0)])
    assert select(study, max_latency_ms=8, max_size_mb=None).number == 1
    assert {t.number for t in tune.pareto_front(study)} == {0, 1}
    # Quiet re-measurement: trial 0 is really 7.5 ms, trial 1 really 7.6 ms.
    study.set_user_attr(tune.REMEASURED, {"0": 7.5, "1": 7.6})
    assert select(study, max_latency_ms=8, max_size_mb=None).number == 0
    assert {t.number for t in tune.pareto_front(study)} == {0}  # 0 now dominates 1
