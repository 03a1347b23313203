"""FractureEdge: bone-fracture detection on radiographs, from training to the phone.

The command-line entry point lives in :mod:`fracture_edge.cli`; the stages live in the
top-level packages ``edge_app`` (on-device runtime), ``train``, ``compress`` and ``benchmarks``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fracture-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
