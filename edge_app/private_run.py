"""What one served web page owns in its process, and gives back however the server stops.

:func:`edge_app.web.launch` makes a :class:`PrivateRun` before it imports Gradio: a private
temporary folder for uploads and overlays, the environment Gradio reads, a umask that keeps every
file there private, and signal handlers that remove the folder. Nothing here imports Gradio, and
nothing happens at import time.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

#: Read by Gradio and huggingface_hub when they are imported (so the run sets them before
#: :func:`edge_app.web.launch` imports Gradio): no telemetry, no version check against Gradio's
#: servers, no call to the Hugging Face Hub (the page never needs it).
PRIVATE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
}
#: Where Gradio keeps uploads and the overlays it serves; the run points it at its private
#: folder.
TEMP_DIR_VARIABLE = "GRADIO_TEMP_DIR"
#: Signals that end the server and must not leave the run's files behind (Ctrl-C, SIGINT, ends
#: Gradio's wait as KeyboardInterrupt and reaches the same clean-up through ``close()``).
CLEANUP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class PrivateRun:
    """What one served page owns in its process, and gives back however the server stops.

    - a private temporary folder (``tempfile.mkdtemp``: mode 0700, a fresh name per run), where
      Gradio keeps uploads and the overlays it serves (``GRADIO_TEMP_DIR``);
    - the environment Gradio reads (:data:`PRIVATE_ENVIRONMENT`) and a umask of 077, so every
      file Gradio writes there is 0600 and every folder 0700;
    - handlers for SIGTERM and SIGHUP (on the main thread, where a signal is not ignored) that
      remove the folder, restore the previous handler and raise the signal again, so the process
      still ends as that signal says.

    :meth:`end` (called by the page's ``close()``, by those handlers and at interpreter exit)
    removes the folder and restores the rest; it runs once.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fracture-edge-web-"))
        variables = {**PRIVATE_ENVIRONMENT, TEMP_DIR_VARIABLE: str(self.folder)}
        self._saved_environment = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        self._saved_umask = os.umask(0o077)
        self._saved_handlers: dict[int, Any] = {}
        self._ended = False
        self._lock = threading.Lock()
        if threading.current_thread() is threading.main_thread():
            for signum in CLEANUP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:  # e.g. nohup: the user wants it ignored
                    self._saved_handlers[signum] = signal.signal(signum, self._on_signal)
        atexit.register(self.end)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.end()
        signal.raise_signal(signum)  # the previous handler (by default: the process ends)

    def end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        os.umask(self._saved_umask)
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        atexit.unregister(self.end)
        for _attempt in range(3):  # a request may still be writing a file into it
            shutil.rmtree(self.folder, ignore_errors=True)
            if not self.folder.exists():
                return
        LOGGER.warning("could not remove the page's temporary folder %s", self.folder)
