"""Admin pages: the forwarding queue per peer (errors, retry, drop) and the worklist form's DICOM value limits."""
from __future__ import annotations

import indexkit
from web_support import page_csrf

from appliance.index import utcnow
from appliance.index.models.retrieval import ForwardJob


def test_forwarding_queue_on_the_peers_page(appliance, admin_client):
    def add(state, error, sop):
        object_id = sop.replace(".", "").rjust(64, "0")
        appliance.index.writer.run(lambda: ForwardJob.insert(
            sop_uid=sop, object_id=object_id, destination="READPACS", state=state, attempts=1, last_error=error,
            next_attempt_at=utcnow(), created_at=utcnow()).execute(appliance.index.db))

    add("failed", "READPACS refused it with C-STORE status 0xA700", "1.2.3.1")
    add("failed", "the peer accepted no presentation context for SOP class 1.2.840.10008.5.1.4.1.1.7", "1.2.3.2")
    add("sent", "", "1.2.3.3")
    page = admin_client.get("/admin/peers").text
    assert "Forwarding queue" in page and "READPACS" in page and "0xA700" in page and "1.2.3.2" in page
    t = page_csrf(admin_client, "/admin/peers")
    [job] = [j for j in appliance.forwarder.failed() if j["sop_uid"] == "1.2.3.1"]
    r = admin_client.post("/admin/forward/drop", data={"csrf_token": t, "job_id": str(job["id"])},
                          follow_redirects=True)
    assert "1 job(s) dropped" in r.text
    r = admin_client.post("/admin/forward/retry", data={"csrf_token": t, "destination": "READPACS"},
                          follow_redirects=True)
    assert "1 failed job(s) queued again" in r.text
    states = sorted(j.state for j in indexkit.rows(appliance.index, "ForwardJob"))
    assert states == ["dropped", "pending", "sent"]
    appliance.audit.flush()
    assert {"forward.drop", "forward.retry"} <= {e.action for e in appliance.audit.query()}


def test_worklist_form_carries_the_value_limits_and_refuses_longer_values(admin_client):
    page = admin_client.get("/admin/worklist").text
    assert 'name="accession" type="text" value="" maxlength="16"' in page
    assert 'name="station_ae" maxlength="16"' in page
    t = page_csrf(admin_client, "/admin/worklist")
    r = admin_client.post("/admin/worklist", data={"csrf_token": t, "patient_name": "Long, Accession",
                                                   "patient_id": "WL9", "scheduled_date": "2026-03-01",
                                                   "modality": "US", "accession": "A" * 20}, follow_redirects=True)
    assert "accession: at most 16 characters (DICOM SH), got 20" in r.text
