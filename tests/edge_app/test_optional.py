import pytest

from edge_app._optional import install_hint, require
from edge_app.errors import MissingDependencyError


def test_missing_module_names_its_extra():
    with pytest.raises(MissingDependencyError, match=r"fracture-edge\[app\]"):
        require("kivy.definitely_not_a_module", "run the app")


def test_hint_uses_the_pip_name():
    assert "grad-cam" in install_hint("pytorch_grad_cam")
    assert "fracture-edge[train]" in install_hint("pytorch_grad_cam")
    assert "pip install somethingelse" in install_hint("somethingelse")


def test_present_module_is_returned():
    assert require("json").dumps([1]) == "[1]"
