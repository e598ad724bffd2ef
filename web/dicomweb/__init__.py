"""DICOMweb at /dicomweb: QIDO-RS, WADO-RS, STOW-RS, WADO-URI and rendering (PS3.18).

``init_app(app)`` builds the shared context (caches, renderer) from the
appliance's [dicomweb] settings and registers the blueprint. Authentication is
``web.auth.api_login_required`` (session, HTTP Basic or API token); see
``blueprint.py`` for which roles may read and store.
"""
from __future__ import annotations

from flask import Flask

from . import qido, stow, wado, wado_uri  # noqa: F401 - modules register their routes on bp
from .blueprint import bp
from .context import DicomWebContext


def init_app(app: Flask) -> None:
    app.extensions["dicomweb"] = DicomWebContext(app.extensions["appliance"])
    app.register_blueprint(bp)
