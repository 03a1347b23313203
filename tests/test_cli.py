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
    for verb in ("audit", "split", "cache"):
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
