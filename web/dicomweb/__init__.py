"""DICOMweb at /dicomweb: QIDO-RS, WADO-RS, STOW-RS, WADO-URI and rendering (PS3.18).

``init_app(app, appliance)`` builds the shared context (caches, renderer) from the
appliance's [dicomweb] settings and registers the blueprint. Authentication is
``web.auth.api_login_required`` (session, HTTP Basic or API token); see
``blueprint.py`` for which roles may read and store.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from . import qido, stow, wado, wado_uri  # noqa: F401 - modules register their routes on bp
from .blueprint import bp
from .context import DicomWebContext

if TYPE_CHECKING:
    from appliance.app import Appliance


def init_app(app: Flask, appliance: "Appliance") -> None:
    app.extensions["dicomweb"] = DicomWebContext(appliance)
    app.register_blueprint(bp)
