"""``fracture-edge measure WHAT`` and ``bench-compare``: help, refusals (exit 2 with a message,
no traceback) and tiny real runs of the quick measurements. ``bench`` itself, the comparison of
real reports and the latency probes run in tests/benchmarks/test_bench.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fracture_edge.cli import main

WHATS = ("batchnorm", "input-pipeline", "latency-probe", "train-throughput", "preprocess-parity")


def _exit_code(argv: list[str]) -> int:
    """The exit code of a command that argparse ends (``--help``, a bad flag)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


def test_measure_help_lists_every_measurement(capsys):
    assert _exit_code(["measure", "--help"]) == 0
    out = capsys.readouterr().out
    for what in WHATS:
        assert what in out


@pytest.mark.parametrize(
    "argv",
    [
        *[["measure", what] for what in WHATS],
        ["measure", "latency-probe", "bursts"],
        ["measure", "latency-probe", "processes"],
        ["bench-compare"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_every_verb_has_help(argv, capsys):
    assert _exit_code([*argv, "--help"]) == 0
    assert "usage: fracture-edge" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["measure", "batchnorm", "--checkpoint", "c", "--cache", "c", "--configs", "192-0.1"],
            "SIZE:RATIO",
        ),
        (
            ["measure", "batchnorm", "--checkpoint", "c", "--cache", "c", "--configs", "192:1.5"],
            "SIZE:RATIO",
        ),
        (["measure", "latency-probe", "bursts", "--arch", "no_such_net"], "invalid choice"),
        (["measure", "latency-probe"], "required"),
        (["measure", "input-pipeline", "--data", "d"], "--cache"),
        (["measure", "no-such-measurement"], "invalid choice"),
        (["bench-compare", "only-one.json"], "required"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, message, capsys):
    assert _exit_code(argv) == 2
    assert message in capsys.readouterr().err


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fracture-edge: error: ") and "Traceback" not in err
    return err


def test_bad_paths_exit_2_with_a_message(tmp_path, capsys):
    nowhere = str(tmp_path / "nowhere")
    assert "does not exist" in _refused(["bench-compare", nowhere, nowhere], capsys)
    bundle = _refused(["measure", "latency-probe", "bursts", "--bundle", nowhere], capsys)
    assert "bundle not found" in bundle
    pipeline = ["measure", "input-pipeline", "--data", nowhere, "--cache", nowhere]
    assert "not a folder" in _refused(pipeline, capsys)
    sizes = ["measure", "train-throughput", "--cache", "c", "--caches", "a", "b", "--sizes", "64"]
    assert "one cache per --sizes entry" in _refused(sizes, capsys)


def test_bad_paths_of_torch_measurements_exit_2(tmp_path, capsys):
    pytest.importorskip("torch")
    nowhere = str(tmp_path / "nowhere")
    batchnorm = ["measure", "batchnorm", "--checkpoint", nowhere, "--cache", nowhere]
    assert "not an image cache" in _refused(batchnorm, capsys)
    parity = ["measure", "preprocess-parity", "--split", nowhere, "--cache", nowhere]
    assert "does not exist" in _refused([*parity, "--input-size", "64"], capsys)
    throughput = ["measure", "train-throughput", "--cache", nowhere, "--sizes", "64"]
    assert "not an image cache" in _refused([*throughput, "--out", str(tmp_path / "t")], capsys)


@pytest.fixture(scope="module")
def cache_and_split(tmp_path_factory, tiny_training_cache) -> tuple[Path, Path]:
    """A 48-px cache whose originals are its own images, and a split file over them."""
    root = tiny_training_cache(tmp_path_factory.mktemp("measure") / "cache")
    split = root.parent / "split.csv"
    with open(root / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(split, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split", "label", "group", "fold", "reason", "relpath"])
        for row in rows:
            relpath = f"images/{row['file']}"
            writer.writerow([row["file"], row["split"], row["label"], row["file"], -1, "", relpath])
    return root, split


def test_input_pipeline_times_the_cache_and_the_originals(cache_and_split, tmp_path, capsys):
    pytest.importorskip("torch")
    cache, _ = cache_and_split
    out = tmp_path / "input_pipeline.json"
    argv = ["measure", "input-pipeline", "--data", str(cache / "images"), "--cache", str(cache)]
    assert main([*argv, "--images", "4", "--repeats", "1", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["images"] == 4 and printed["cache_over_originals"] > 0


def test_input_pipeline_refuses_a_data_root_without_the_originals(cache_and_split, tmp_path):
    pytest.importorskip("torch")
    cache, _ = cache_and_split
    (tmp_path / "empty").mkdir()
    argv = ["measure", "input-pipeline", "--data", str(tmp_path / "empty"), "--cache", str(cache)]
    assert main(argv) == 2


def test_preprocess_parity_of_a_cache_at_the_input_size_is_exact(cache_and_split, capsys):
    pytest.importorskip("torch")
    cache, split = cache_and_split
    argv = ["measure", "preprocess-parity", "--data", str(cache), "--split", str(split)]
    assert main([*argv, "--cache", str(cache), "--input-size", "48", "--limit", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 4 and result["intensity_difference"]["max"] < 1e-6


def test_measure_runtime_and_hostile_inputs_are_verbs(tmp_path, capsys):
    assert _exit_code(["measure", "runtime", "--help"]) == 0
    assert _exit_code(["measure", "hostile-inputs", "--help"]) == 0
    err = _refused(["measure", "hostile-inputs", "--workdir", str(tmp_path), "--only", "x"], capsys)
    assert "unknown hostile inputs" in err
