"""Messages go through ``logging`` (the ``adapterkit`` logger); progress bars through tqdm.

A ``verbose=True`` option shows this package's INFO messages on stderr when the application has not
configured logging itself; an application that has keeps full control (levels, handlers, format).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("adapterkit")


def show_messages() -> None:
    """Print the package's INFO messages on stderr, unless the application set up logging already."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
