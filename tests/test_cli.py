import subprocess
import sys

import pytest

from fracture_edge.cli import main


def test_help_lists_the_data_verbs(capsys):
    try:
        main(["data", "--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    for verb in ("audit", "split", "cache", "labels"):
        assert verb in out


def test_missing_path_is_a_clear_error_without_traceback(tmp_path, capsys):
    code = main(["data", "audit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "does not exist" in err and "Traceback" not in err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "fracture_edge.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "fracture-edge" in result.stdout


def test_a_reader_that_leaves_early_gets_no_traceback(tiny_bundle, make_radiograph, tmp_path):
    """`fracture-edge predict ... --json | head -1`: the pipe closes while lines remain."""
    from PIL import Image

    paths = [str(tmp_path / f"{index}.png") for index in range(40)]
    for index, path in enumerate(paths):
        Image.fromarray(make_radiograph(64, 48, 1, index)).save(path)
    command = [sys.executable, "-m", "fracture_edge.cli", "predict", *paths, "--json"]
    command += ["--model", str(tiny_bundle)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        child.stdout.readline()
        child.stdout.close()
        stderr = child.stderr.read().decode()
        child.wait(timeout=120)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert child.returncode == 141


def test_user_errors_exit_2_with_a_message_and_bugs_keep_their_traceback(monkeypatch, capsys):
    """The one error mapping: FractureEdgeError → message, exit 2; anything else → exit 1."""
    import argparse

    from edge_app.errors import UsageError
    from fracture_edge import cli

    def parser_with(handler):
        parser = argparse.ArgumentParser()
        parser.add_argument("-v", "--verbose", action="store_true")
        parser.set_defaults(handler=handler)
        return parser

    def user_error(args):
        raise UsageError("give --out DIR")

    monkeypatch.setattr(cli, "build_parser", lambda: parser_with(user_error))
    assert cli.main([]) == 2
    assert "fracture-edge: error: give --out DIR" in capsys.readouterr().err

    def bug(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(cli, "build_parser", lambda: parser_with(bug))
    with pytest.raises(ValueError, match="invariant"):
        cli.main([])  # the console script turns the uncaught exception into exit 1 + traceback


def _split_file(path):
    rows = [
        ("a.jpg", "train", 1, "images/a.jpg"),
        ("b.jpg", "test", 1, "images/b.jpg"),
        ("c.jpg", "test", 0, "other/c.jpg"),
    ]
    lines = ["file,split,label,group,fold,reason,relpath"]
    lines += [
        f"{file},{split},{label},{file},-1,,{relpath}" for file, split, label, relpath in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_data_labels_writes_a_split_as_an_external_labels_csv(tmp_path, capsys):
    split = _split_file(tmp_path / "split.csv")
    out = tmp_path / "site" / "labels.csv"
    assert main(["data", "labels", str(split), "--out", str(out)]) == 0
    assert out.read_text() == "file,fracture\nimages/b.jpg,1\nother/c.jpg,0\n"
    assert "2 films, 1 fractured" in capsys.readouterr().out
    assert main(["data", "labels", str(split), "--split", "train", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    argv = ["data", "labels", str(split), "--split", "train", "--out", str(out), "--overwrite"]
    assert main(argv) == 0
    assert out.read_text() == "file,fracture\nimages/a.jpg,1\n"


@pytest.mark.parametrize(
    ("problem", "message"),
    [("missing split", "does not exist"), ("no rows", "no 'val' rows"), ("onto split", "input")],
)
def test_data_labels_refusals_exit_2_with_a_message(tmp_path, capsys, problem, message):
    split, out = _split_file(tmp_path / "split.csv"), str(tmp_path / "x.csv")
    argv = {
        "missing split": ["data", "labels", str(tmp_path / "nowhere.csv"), "--out", out],
        "no rows": ["data", "labels", str(split), "--split", "val", "--out", out],
        "onto split": ["data", "labels", str(split), "--out", str(split), "--overwrite"],
    }[problem]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()


def test_data_labels_needs_out(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["data", "labels", "split.csv"])
    assert stop.value.code == 2 and "--out" in capsys.readouterr().err
