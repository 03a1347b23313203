"""edge_app runs on a phone: its runtime must import neither torch nor tensorflow, and neither
must its front ends (the app's window, the web page and their verbs), with their own libraries
(Kivy, Gradio) imported."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RUNTIME_MODULES = [
    "edge_app",
    "edge_app.errors",
    "edge_app._optional",
    "edge_app.preprocess",
    "edge_app.radiograph",
    "edge_app.film",
    "edge_app.limits",
    "edge_app.sniff",
    "edge_app.image_io",
    "edge_app.dicom_io",
    "edge_app.windowing",
    "edge_app.volume_io",
    "edge_app.nifti_io",
    "edge_app.library_logs",
    "edge_app.files",
    "edge_app.metrics",
    "edge_app.labelled_folder",
    "edge_app.site_calibration",
    "edge_app.calibrate_cli",
    "edge_app.tflite",
    "edge_app.card",
    "edge_app.runtime",
    "edge_app.findings",
    "edge_app.render",
    "edge_app.text",
    "edge_app.predict",
    "edge_app.app",
    "edge_app.app_cli",
    "edge_app.app_android",
    "edge_app.web",
    "edge_app.web_cli",
    "edge_app.private_run",
]
#: Front ends whose own library must be imported too: a module's lazy import of it is where a
#: heavy import would hide. (module, its library, the entry point that configures it first)
FRONT_ENDS = [
    ("edge_app.app_ui", "kivy", "from edge_app.app_cli import configure_kivy; configure_kivy()"),
    ("edge_app.web", "gradio", "import edge_app.web as web; web._gradio()"),
]

_PROBE = textwrap.dedent(
    """
    import importlib, sys

    class Forbid:
        # Fail loudly on the import itself, not only afterwards.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "tensorflow", "tensorflow_core", "keras"):
                raise ImportError("edge_app imported " + name)
            return None

    sys.meta_path.insert(0, Forbid())
    # before
    for module in sys.argv[1:]:
        importlib.import_module(module)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow"))
    print("HEAVY:" + ",".join(heavy))
    """
)


def _probe(tmp_path: Path, *modules: str, before: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, KIVY_HOME=str(tmp_path / "kivy"), KIVY_NO_ARGS="1")
    return subprocess.run(
        [sys.executable, "-c", _PROBE.replace("# before\n", before + "\n"), *modules],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_runtime_module_imports_without_torch_or_tensorflow(module, tmp_path):
    result = _probe(tmp_path, module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("HEAVY:"), result.stdout


@pytest.mark.parametrize(("module", "library", "entry"), FRONT_ENDS)
def test_front_end_imports_without_torch_or_tensorflow(module, library, entry, tmp_path):
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{module} needs {library}, which is not installed")
    result = _probe(tmp_path, module, before=entry)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("HEAVY:"), result.stdout


def test_the_probe_would_catch_a_heavy_import():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "torch"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "edge_app imported torch" in result.stderr
