"""The query engine's DICOM matching rules (PS3.4 C.2.2.2), on a small real index."""
from __future__ import annotations

import pytest

import synth
from core_parts import make_core
from appliance.index import query
from appliance.index.query import QueryError


@pytest.fixture(scope="module")
def idx(tmp_path_factory, pg_cluster):
    """Four studies of three patients, with known dates, times, names and modalities (read-only)."""
    core = make_core(tmp_path_factory.mktemp("query"), url=pg_cluster.fresh_url() if pg_cluster else "")
    rows = [
        # name, id, study date, study time, modality, accession
        ("Smith^John", "Q1", "20240105", "081500", "CT", "ACC1"),
        ("Smith^Jane", "Q2", "20240220", "143000", "MR", "ACC2"),
        ("smithers^waylon", "Q3", "20240301", "235959", "US", "ACC3"),
        ("Smith^John", "Q1", "20240415", "000000", "US", "ACC4"),
    ]
    core.uids = []
    for name, pid, date, time, modality, acc in rows:
        ds = synth.make_instance("CT", patient_name=name, patient_id=pid, study_date=date, accession=acc,
                                 modality=modality)
        ds.StudyTime = time
        core.store(ds)
        core.uids.append(str(ds.StudyInstanceUID))
    yield core
    core.index.close()


def accessions(idx, criteria, **kwargs) -> list[str]:
    return sorted(r["AccessionNumber"] for r in query.search(idx.index.db, "STUDY", criteria, **kwargs))


def test_universal_matching(idx):
    assert accessions(idx, {}) == ["ACC1", "ACC2", "ACC3", "ACC4"]
    assert accessions(idx, {"PatientName": "", "StudyDate": "", "AccessionNumber": "*"}) == [
        "ACC1", "ACC2", "ACC3", "ACC4"]


def test_single_value(idx):
    assert accessions(idx, {"PatientID": "Q1"}) == ["ACC1", "ACC4"]
    assert accessions(idx, {"PatientID": "q1"}) == []  # IDs are case-sensitive
    assert accessions(idx, {"AccessionNumber": "ACC3"}) == ["ACC3"]


def test_wildcards(idx):
    assert accessions(idx, {"PatientName": "Smith^*"}) == ["ACC1", "ACC2", "ACC4"]
    assert accessions(idx, {"PatientName": "Smith*"}) == ["ACC1", "ACC2", "ACC3", "ACC4"]
    assert accessions(idx, {"PatientName": "Smith^J?n*"}) == ["ACC2"]
    assert accessions(idx, {"PatientName": "*^jo*"}) == ["ACC1", "ACC4"]
    assert accessions(idx, {"AccessionNumber": "ACC?"}) == ["ACC1", "ACC2", "ACC3", "ACC4"]
    assert accessions(idx, {"AccessionNumber": "AC*4"}) == ["ACC4"]
    assert accessions(idx, {"PatientName": "[Smith]*"}) == []  # '[' is literal, not a GLOB class


def test_names_case_insensitive_by_default(idx):
    assert accessions(idx, {"PatientName": "SMITH^JOHN"}) == ["ACC1", "ACC4"]
    assert accessions(idx, {"PatientName": "smithers*"}) == ["ACC3"]


def test_names_case_sensitive_option(idx):
    assert accessions(idx, {"PatientName": "SMITH^JOHN"}, case_sensitive_names=True) == []
    assert accessions(idx, {"PatientName": "Smith^John"}, case_sensitive_names=True) == ["ACC1", "ACC4"]
    assert accessions(idx, {"PatientName": "smith*"}, case_sensitive_names=True) == ["ACC3"]


def test_fuzzy_names_match_any_part(idx):
    assert accessions(idx, {"PatientName": "jane"}, fuzzy=True) == ["ACC2"]


def test_date_ranges(idx):
    assert accessions(idx, {"StudyDate": "20240101-20240229"}) == ["ACC1", "ACC2"]
    assert accessions(idx, {"StudyDate": "20240220-20240220"}) == ["ACC2"]  # inclusive
    assert accessions(idx, {"StudyDate": "20240301-"}) == ["ACC3", "ACC4"]  # open end
    assert accessions(idx, {"StudyDate": "-20240105"}) == ["ACC1"]  # open start
    assert accessions(idx, {"StudyDate": "2024.02.20"}) == ["ACC2"]  # ACR-NEMA style


def test_time_ranges(idx):
    assert accessions(idx, {"StudyTime": "080000-150000"}) == ["ACC1", "ACC2"]
    assert accessions(idx, {"StudyTime": "14-"}) == ["ACC2", "ACC3"]
    assert accessions(idx, {"StudyTime": "-0815"}) == ["ACC1", "ACC4"]  # a partial upper bound covers its minute
    assert accessions(idx, {"StudyTime": "2359"}) == ["ACC3"]  # a partial single value covers its minute
    assert accessions(idx, {"StudyTime": "23:59:59"}) == ["ACC3"]


def test_uid_lists(idx):
    two = idx.uids[0] + "\\" + idx.uids[2]
    assert accessions(idx, {"StudyInstanceUID": two}) == ["ACC1", "ACC3"]
    assert accessions(idx, {"StudyInstanceUID": idx.uids[1]}) == ["ACC2"]
    assert accessions(idx, {"StudyInstanceUID": [idx.uids[1], idx.uids[3]]}) == ["ACC2", "ACC4"]


def test_value_lists_and_modalities(idx):
    assert accessions(idx, {"AccessionNumber": "ACC1\\ACC3"}) == ["ACC1", "ACC3"]
    assert accessions(idx, {"ModalitiesInStudy": "US"}) == ["ACC3", "ACC4"]
    assert accessions(idx, {"ModalitiesInStudy": "CT\\MR"}) == ["ACC1", "ACC2"]


def test_combined_keys_and_levels(idx):
    assert accessions(idx, {"PatientName": "smith^john", "StudyDate": "20240301-"}) == ["ACC4"]
    patients = query.search(idx.index.db, "PATIENT", {"PatientName": "Smith^John"})
    assert len(patients) == 1 and patients[0]["NumberOfPatientRelatedStudies"] == 2
    series = query.search(idx.index.db, "SERIES", {"Modality": "US"})
    assert sorted(r["AccessionNumber"] for r in series) == ["ACC3", "ACC4"]
    images = query.search(idx.index.db, "IMAGE", {"PatientID": "Q2"})
    assert len(images) == 1 and images[0]["_object_id"]
    # a key below the level cannot restrict it
    assert len(query.search(idx.index.db, "STUDY", {"SOPInstanceUID": "1.2.3"})) == 4


def test_single_uid_lookups_use_one_statement_per_shape_and_match_as_built(idx):
    """A retrieve names each level by one UID: its SQL is built once per (level, keys) and reused, with the
    same records as the query built for the values themselves."""
    db = idx.index.db
    image = query.search(db, "IMAGE", {"PatientID": "Q2"})[0]
    uids = {k: image[k] for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    for level, keys in (("STUDY", ["StudyInstanceUID"]), ("IMAGE", ["StudyInstanceUID"]),
                        ("IMAGE", ["StudyInstanceUID", "SeriesInstanceUID"]), ("IMAGE", list(uids))):
        criteria = {k: uids[k] for k in keys}
        built = query.search(db, level, {**criteria, "PatientID": "Q2"})  # not only UIDs: built each time
        assert query.search(db, level, criteria) == built
        assert query.search(db, level, criteria) == built  # the statement kept
        assert (type(db), level, tuple(keys)) in query._UID_LOOKUPS
        other = {k: v + "9" for k, v in criteria.items()}
        assert query.search(db, level, other) == []
    assert accessions(idx, {"StudyInstanceUID": idx.uids[1], "PatientName": ""}) == ["ACC2"]  # universal: no key


@pytest.mark.parametrize("criteria", [
    {"StudyInstanceUID": "1.2.*"},
    {"StudyDate": "2024-01-01-2024"},
    {"StudyDate": "202401"},
    {"StudyTime": "2pm"},
    {"StudyDate": "-"},
])
def test_bad_values_are_query_errors(idx, criteria):
    with pytest.raises(QueryError):
        query.search(idx.index.db, "STUDY", criteria)


def test_unknown_level(idx):
    with pytest.raises(QueryError):
        query.build_query("WORLD", {})
    with pytest.raises(QueryError):  # a search by one UID too (it would reuse a statement)
        query.search(idx.index.db, "WORLD", {"StudyInstanceUID": "1.2.3"})
