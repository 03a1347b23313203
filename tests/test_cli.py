import subprocess
import sys

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
