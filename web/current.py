"""The appliance this Flask app serves, typed: the one accessor for views (create_app put it there)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # web depends on appliance, never the reverse: no import cycle at run time
    from appliance.app import Appliance


def appliance() -> "Appliance":
    """The running Appliance: its index, peers, worklist, forwarder, backup and recycler are always set."""
    return current_app.extensions["appliance"]
