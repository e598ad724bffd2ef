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
