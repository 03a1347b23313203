"""``fracture-edge doctor``: versions against constraints.txt, checks, and fixes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from fracture_edge import doctor


def test_pinned_versions_read_name_equals_version_lines(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# header\n\npip==26.3\nonnx_graphsurgeon==0.6.1  # why\nTF_Keras==2.21.0\n")
    assert doctor.pinned_versions(path) == {
        "pip": "26.3",
        "onnx-graphsurgeon": "0.6.1",
        "tf-keras": "2.21.0",
    }
    assert doctor.pinned_versions(tmp_path / "absent.txt") == {}


def test_version_rows_name_what_differs_from_the_pins(monkeypatch):
    installed = {"numpy": "2.4.6", "onnx": "1.19.0"}
    monkeypatch.setattr(doctor, "installed_version", installed.get)
    rows = {
        name: (version, note)
        for name, _, version, note in doctor.version_rows({"numpy": "2.4.6", "onnx": "1.23.2"})
    }
    assert rows["numpy"] == ("2.4.6", "")
    assert rows["onnx"] == ("1.19.0", "constraints.txt pins 1.23.2")
    assert rows["onnx2tf"] == ("-", "not installed")


def test_the_repository_constraints_pin_what_onnx2tf_imports():
    pins = doctor.pinned_versions()
    for name in (
        "onnx2tf",
        "onnx",
        "onnx-graphsurgeon",
        "sng4onnx",
        "tensorflow-cpu",
        "tf-keras",
        "protobuf",
        "psutil",
        "requests",
        "numpy",
        "torch",
        "timm",
    ):
        assert name in pins, f"constraints.txt does not pin {name}"


def test_no_screen_on_linux_is_reported_with_the_fix(monkeypatch):
    monkeypatch.setattr(doctor.platform, "system", lambda: "Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    check = doctor.screen_check()
    assert not check.ok
    assert "xvfb-run" in check.fix and "predict" in check.fix
    monkeypatch.setenv("DISPLAY", ":7")
    assert doctor.screen_check().ok


def test_a_failing_child_check_reports_its_error_line():
    ok, detail = doctor._child("raise SystemExit('no such runtime')")
    assert not ok and detail == "no such runtime"
    ok, detail = doctor._child("import time; time.sleep(5)", timeout=0.5)
    assert not ok and "no answer" in detail


@pytest.mark.slow
def test_doctor_json_from_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "fracture_edge.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    payload = json.loads(result.stdout)
    checks = {check["name"]: check for check in payload["checks"]}
    litert = checks["LiteRT runs the shipped bundle"]
    if importlib.util.find_spec("ai_edge_litert") is None:
        assert not litert["ok"] and "[app]" in litert["fix"]
        assert result.returncode == 1
    else:
        assert litert["ok"] and "fracture-lite0-int8" in litert["detail"]
        assert result.returncode == 0
    names = {package["name"] for package in payload["packages"]}
    assert {"onnx2tf", "tensorflow-cpu", "torch", "ai-edge-litert"} <= names
