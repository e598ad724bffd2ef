"""Serving the Flask app with waitress inside the appliance process."""
from __future__ import annotations

import logging
import threading

from waitress.server import create_server

from . import create_app

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, appliance, host: str, port: int, threads: int = 8):
        self.app = create_app(appliance)
        self._server = create_server(self.app, host=host, port=port, threads=threads, ident="pacs-appliance")
        self._thread: threading.Thread | None = None

    @property
    def bound_address(self) -> tuple[str, int]:
        return self._server.socket.getsockname()[:2]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)
        self._thread.start()
        log.info("web UI listening on http://%s:%d", *self.bound_address)

    def stop(self) -> None:
        self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
