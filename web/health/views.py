from flask import jsonify

from . import bp


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")
