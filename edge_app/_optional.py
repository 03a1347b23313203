"""Import optional libraries with an install hint that names the extra providing them."""

from __future__ import annotations

import importlib
from types import ModuleType

from edge_app.errors import MissingDependencyError

# Which extra of the ``fracture-edge`` distribution provides each optional module.
_EXTRA_OF_MODULE = {
    "pydicom": "app",
    "nibabel": "app",
    "kivy": "app",
    "ai_edge_litert": "app",
    "matplotlib": "train",
    "albumentations": "train",
    "cv2": "train",
    "torch": "train",
    "torchvision": "train",
    "timm": "train",
    "pytorch_grad_cam": "train",
    "safetensors": "train",
    "yaml": "train",
    "onnx": "compress",
    "onnx2tf": "compress",
    "tensorflow": "compress",
    "optuna": "compress",
    "gradio": "web",
    "onnxruntime": "compress",
    "torch_pruning": "compress",
}

# Where the import name differs from the name pip installs.
_PIP_NAME_OF_MODULE = {
    "ai_edge_litert": "ai-edge-litert",
    "cv2": "opencv-python-headless",
    "pytorch_grad_cam": "grad-cam",
    "yaml": "pyyaml",
    "tensorflow": "tensorflow-cpu",
    "torch_pruning": "torch-pruning",
}


def install_hint(module_name: str, purpose: str = "") -> str:
    """Return the sentence telling a user how to install ``module_name``."""
    root = module_name.split(".")[0]
    extra = _EXTRA_OF_MODULE.get(root)
    pip_name = _PIP_NAME_OF_MODULE.get(root, root)
    need = f" to {purpose}" if purpose else ""
    if extra is None:
        return f"The optional package '{pip_name}' is needed{need}: pip install {pip_name}"
    return (
        f"The optional package '{pip_name}' is needed{need}. Install the '{extra}' extra: "
        f"pip install 'fracture-edge[{extra}]' (or: pip install {pip_name})"
    )


def require(module_name: str, purpose: str = "") -> ModuleType:
    """Import ``module_name`` or raise :class:`MissingDependencyError` with an install hint."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise MissingDependencyError(install_hint(module_name, purpose)) from error
