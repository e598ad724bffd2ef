"""Each Index reads and writes its own database: two indexes in one process never see each other's rows.

The models are not bound to a database; every repository and the query engine execute against the
Index's own (appliance/index/repository.py). A global ``db.bind`` would send one of these to the
other's file.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import synth


def _uids(core) -> set[str]:
    return {r["StudyInstanceUID"] for r in core.index.search("STUDY", {})}


def test_two_indexes_see_only_their_own_rows(core_factory):
    a, b = core_factory(), core_factory()
    in_a = a.store(synth.make_instance("CT", patient_id="BIND-A"))
    in_b = b.store(synth.make_instance("MR", patient_id="BIND-B"))

    assert _uids(a) == {in_a.study_uid} and _uids(b) == {in_b.study_uid}
    assert a.index.count("IMAGE", {}) == 1 and b.index.count("IMAGE", {}) == 1
    assert a.index.studies.find_instance(in_a.sop_uid) is not None
    assert a.index.studies.find_instance(in_b.sop_uid) is None
    assert b.index.studies.find_instance(in_a.sop_uid) is None
    assert b.index.studies.stored_digest(in_b.sop_uid) is not None
    assert a.index.studies.stored_digest(in_b.sop_uid) is None


def test_two_indexes_in_threads(core_factory):
    """Writers running and readers on pool threads (each with its own connection per database)."""
    cores = {"A": core_factory(), "B": core_factory()}
    for core in cores.values():
        core.index.start()
    datasets = [(name, synth.make_instance("CT", patient_id=f"BIND-{name}")) for name in "ABABAB"]

    def store(item):
        name, ds = item
        return name, cores[name].store(ds).study_uid

    with ThreadPoolExecutor(6) as pool:
        stored = list(pool.map(store, datasets))
        expected = {name: {uid for n, uid in stored if n == name} for name in cores}
        seen = list(pool.map(lambda name: (name, _uids(cores[name])), list(cores) * 4))
    assert all(uids == expected[name] for name, uids in seen)
    assert all(len(expected[name]) == 3 for name in cores)
    for name, core in cores.items():
        ids = {r["PatientID"] for r in core.index.search("PATIENT", {})}
        assert ids == {f"BIND-{name}"}


def test_repositories_never_use_a_globally_bound_database(core):
    """With every model bound to an empty database, each area still reads and writes its own index."""
    import datetime

    from peewee import SqliteDatabase

    from appliance.index.models import all_models
    from appliance.records import accounts
    from appliance.records.audit import AuditLog

    index = core.index
    empty = SqliteDatabase(":memory:")
    with empty.bind_ctx(all_models(), bind_refs=False, bind_backrefs=False):
        stored = core.store(synth.make_instance("CT", patient_id="BIND-R"))
        studies = index.studies
        assert studies.find_instance(stored.sop_uid).object_id == stored.object_id
        assert [i.sop_uid for i in studies.study_instances(stored.study_uid)] == [stored.sop_uid]
        assert studies.totals() == (1, 1, 1) and studies.patient_id_of(stored.study_uid) == "BIND-R"
        assert studies.latest_studies()[0].modalities == ["CT"]
        assert studies.received_since(datetime.datetime(2000, 1, 1))[0] == 1

        index.writer.run(lambda: accounts.create_user(index.accounts, "binder", "long-enough-password", "admin"))
        token, _ = index.writer.run(lambda: accounts.create_api_token(index.accounts, "binder"))
        assert accounts.user_for_token(index.accounts, token).username == "binder"
        now = datetime.datetime(2030, 1, 1)
        index.accounts.add_session("hash", index.accounts.user("binder").id, "", now, now + datetime.timedelta(hours=1))
        assert index.accounts.session("hash")[1].username == "binder"

        assert index.peers.add("BINDPEER", host="h", port=104).ae_title == "BINDPEER"
        assert index.peers.ae_titles() == ["BINDPEER"]

        item = index.worklist.add({"patient_id": "P", "modality": "CT", "scheduled_date": "20300101",
                                   "study_uid": "1.2.3", "status": "SCHEDULED"})
        assert [i.id for i in index.worklist.search({"PatientID": "P"})] == [item.id]
        index.writer.run(lambda: index.worklist.add_step(
            sop_uid="9.9", worklist_item_id=item.id, status="IN PROGRESS", calling_ae="CT1", study_uid="1.2.3",
            modality="CT", attributes=""))
        assert index.worklist.get(item.id).status == "IN PROGRESS"

        index.writer.run(lambda: index.forwarding.enqueue(stored.sop_uid, stored.object_id, "BINDPEER", now))
        assert index.forwarding.status()[0]["pending"] == 1

        log = AuditLog(index)
        log.record("test.bind", "pytest")
        assert [e.action for e in log.query()] == ["test.bind"] and log.verify().ok


def test_opening_an_index_binds_no_model(core):
    from appliance.index.models import all_models

    assert all(model._meta.database is None for model in all_models())
