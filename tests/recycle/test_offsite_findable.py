"""A study recycled to free space stays findable (issue 20 item 7): the query engine returns it, marked
NEARLINE, to the callers that ask (study list, priors, QIDO), never to C-FIND; once restored it is live."""
from __future__ import annotations

from recyclekit import MiB

from appliance.index import query


def recycle_a(box):
    box.add_study("A")
    box.add_study("B")
    box.age("A", 60)
    box.app.backup.run(trigger="manual")
    box.capacity = box.archive_bytes() + 3 * MiB - box.sealed_size("A") + 100
    assert len(box.app.recycler.run().recycled) == 1


def uids(records):
    return [(r["StudyInstanceUID"], r.get("InstanceAvailability"), bool(r.get("_offsite"))) for r in records]


def test_offsite_studies_are_found_when_asked_and_marked(box):
    recycle_a(box)
    a, b = box.studies["A"], box.studies["B"]
    assert uids(box.app.index.search("STUDY", {"PatientID": "RCY1"})) == [(b, None, False)]  # C-FIND: live only
    found = box.app.index.search("STUDY", {"PatientID": "RCY1"}, include_offsite=True)
    assert sorted(uids(found)) == sorted([(a, "NEARLINE", True), (b, "ONLINE", False)])
    assert box.app.index.count("STUDY", {"PatientID": "RCY1"}, include_offsite=True) == 2
    offsite = next(r for r in found if r.get("_offsite"))
    assert offsite["PatientName"] == "TEST^PATIENT" and offsite["NumberOfStudyRelatedInstances"] == 2
    assert set(query.COLUMNS["STUDY"].keywords) <= set(offsite)  # every key a live record has

    # matched with the engine's rules
    how = {"include_offsite": True}
    assert uids(box.app.index.search("STUDY", {"StudyInstanceUID": a}, **how)) == [(a, "NEARLINE", True)]
    assert (a, "NEARLINE", True) in uids(box.app.index.search("STUDY", {"PatientName": "patient test"}, fuzzy=True, **how))
    assert (a, "NEARLINE", True) in uids(box.app.index.search("STUDY", {"PatientID": "rcy*"}, case_sensitive_ids=False, **how))
    assert uids(box.app.index.search("STUDY", {"PatientID": "OTHER"}, **how)) == []
    assert uids(box.app.index.search("STUDY", {"StudyDate": "20250101-20251231"}, **how)) == []
    # a condition a recycled study cannot be checked against leaves it out
    assert a not in [r["StudyInstanceUID"] for r in box.app.index.search("STUDY", {"StudyID": "1"}, **how)]
    # pages across live and offsite studies
    first, second = (box.app.index.search("STUDY", {"PatientID": "RCY1"}, limit=1, offset=n, **how) for n in (0, 1))
    assert {first[0]["StudyInstanceUID"], second[0]["StudyInstanceUID"]} == {a, b}


def test_restored_study_is_live_again(box):
    recycle_a(box)
    box.app.recycler.restore(box.studies["A"], actor="test")
    found = box.app.index.search("STUDY", {"PatientID": "RCY1"}, include_offsite=True)
    assert sorted(uids(found)) == sorted([(box.studies["A"], "ONLINE", False), (box.studies["B"], "ONLINE", False)])


def test_browser_bring_back_runs_off_the_request_and_reports(box):
    from helpers import wait_until
    from web.viewer.restore import Restores

    recycle_a(box)
    restores = Restores(box.app.recycler)
    try:
        first = restores.start(box.studies["A"], actor="clinician1")
        assert first["state"] in ("queued", "running")
        assert restores.start(box.studies["A"], actor="clinician1")["state"] in ("queued", "running", "done")
        done = wait_until(lambda: restores.status(box.studies["A"])["state"] in ("done", "failed") and
                          restores.status(box.studies["A"]), 30, what="the restore")
        assert done["state"] == "done" and "back on this box (2 images)" in done["message"], done
        assert restores.status("1.2.3") is None
    finally:
        restores.close()
