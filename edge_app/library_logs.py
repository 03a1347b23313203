"""Keep a library's own log records out of the user's terminal while we handle its failure.

pydicom logs an ERROR with a traceback when a decoder plugin refuses data (e.g. Pillow and a
12-bit JPEG DICOM) and then raises; the loader turns that exception into a message that says
what to install. Shown as well, the traceback looks like a crash. Nothing here changes logging
globally or at import time: :func:`quiet_library_logs` adds a filter for the duration of one
call, on the library's loggers only, dropping only records made by the calling thread, and
passes what it drops to this module's DEBUG log (visible with ``--verbose``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger(__name__)


class _CurrentThreadBelowCritical(logging.Filter):
    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno >= logging.CRITICAL:
            return True
        LOGGER.debug("%s %s: %s", record.levelname, record.name, record.getMessage())
        return False


@contextmanager
def quiet_library_logs(library: str) -> Iterator[None]:
    """Inside the block, records below CRITICAL that this thread logs through ``library``'s
    loggers (``library`` and ``library.*``, as they exist on entry) go to DEBUG instead."""
    quiet = _CurrentThreadBelowCritical(threading.get_ident())
    names = [library] + [
        name for name in list(logging.root.manager.loggerDict) if name.startswith(library + ".")
    ]
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
