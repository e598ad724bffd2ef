"""The dashboard and /metrics say whether recycling is on, what it freed, and when it is stuck."""
from __future__ import annotations

import re

from helpers import ADMIN_PASSWORD
from recyclekit import MiB


def admin_client(app):
    from web import create_app

    client = create_app(app, {"TESTING": True}).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                       "csrf_token": token}).status_code == 302
    return client


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_dashboard_and_metrics(box):
    client = admin_client(box.app)
    box.add_study("A")
    box.age("A", 60)
    box.capacity = box.archive_bytes() + 2 * MiB  # below the 3 MiB watermark
    box.app.recycler.run()  # A is not backed up: nothing can go

    page = client.get("/").text
    assert "Recycling" in page and "nothing more can be recycled: 1 study not yet offsite" in page
    text = client.get("/metrics").text
    assert metric(text, "pacs_recycle_enabled") == 1 and metric(text, "pacs_recycle_warning") == 1
    assert metric(text, "pacs_recycle_last_blocked_studies") == 1 and metric(text, "pacs_recycled_studies_total") == 0

    box.app.backup.run(trigger="manual")
    size = box.sealed_size("A")
    box.capacity = box.archive_bytes() + 3 * MiB - size + 100  # freeing A meets the target
    assert len(box.app.recycler.run().recycled) == 1
    page = client.get("/").text
    assert "nothing more can be recycled" not in page and "last freed" in page and "1 study offsite only" in page
    assert "Offsite only (recycled)" in page and "storage restore" in page and "TEST PATIENT" in page
    text = client.get("/metrics").text
    assert metric(text, "pacs_recycled_studies_total") == 1 and metric(text, "pacs_recycled_bytes_total") == size
    assert metric(text, "pacs_recycle_warning") == 0 and metric(text, "pacs_recycle_offsite_only_studies") == 1
