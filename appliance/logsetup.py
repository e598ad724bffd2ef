"""Logging to stderr, configured once by the CLI. Logs carry UIDs and AE titles, never patient data."""
from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom's INFO lines describe every PDU; keep them for DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
    logging.getLogger("waitress").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(logging.WARNING)
