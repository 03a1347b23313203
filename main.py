"""Android entry point: buildozer packages the repository root (``source.dir = .`` in
buildozer.spec) and runs this file. On a laptop, run ``fracture-edge app`` instead
(docs/app.md).
"""

import logging
import sys

from edge_app.app_cli import run_app

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # logcat
    sys.exit(run_app(None, []))
