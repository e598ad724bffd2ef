"""The web app: Flask app factory; the appliance's services are passed in, never imported as globals."""
from __future__ import annotations

from flask import Flask, jsonify


def create_app(appliance, test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.extensions["appliance"] = appliance
    if test_config:
        app.config.update(test_config)

    @app.get("/healthz")
    def healthz():
        # Reveals no patient data: only whether each part answers.
        return jsonify(status="ok")

    return app
