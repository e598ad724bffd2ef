"""Names and IDs as people type them (issue 20 item 5), through the one query engine that C-FIND,
QIDO-RS and the study list share: accents and case folded, words in any order, IDs without case."""
from __future__ import annotations

import pytest

import synth
from core_parts import make_core
from appliance.index import query
from appliance.index.names import fold, words


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    core = make_core(tmp_path_factory.mktemp("names"))
    for name, pid, acc in [("Müller^Hans", "ab12", "M1"), ("MOORE^SARA", "MS-7", "M2"),
                           ("Moorehead^Sam", "X9", "M3"), ("Ødegård^Åse", "OD1", "M4")]:
        core.store(synth.make_instance("CT", patient_name=name, patient_id=pid, accession=acc))
    yield core
    core.index.close()


def accessions(idx, criteria, **kwargs) -> list[str]:
    return sorted(r["AccessionNumber"] for r in query.search(idx.index.db, "STUDY", criteria, **kwargs))


def test_fold_and_words():
    assert fold("Müller") == fold("muller") == fold("MÜLLER") == "MULLER"
    assert fold("Ødegård^Åse") == "ODEGARD^ASE"
    assert fold("Straße") == "STRASSE"
    assert words("Moore, Sara") == ["MOORE", "SARA"]
    assert words(" sara   moore ") == ["SARA", "MOORE"]
    assert words("MOORE^SARA") == ["MOORE", "SARA"]


def test_dicom_matching_folds_accents_and_case(idx):
    for typed in ("muller^hans", "MÜLLER^HANS", "Muller^*", "mül*"):
        assert accessions(idx, {"PatientName": typed}) == ["M1"], typed
    assert accessions(idx, {"PatientName": "odegard*"}) == ["M4"]
    assert accessions(idx, {"PatientName": "Müller^Hans"}, case_sensitive_names=True) == ["M1"]  # as sent


@pytest.mark.parametrize("typed, expected", [
    ("Moore, Sara", ["M2"]), ("sara moore", ["M2"]), ("MOORE^SARA", ["M2"]), ("moore", ["M2", "M3"]),
    ("muller", ["M1"]), ("MÜLLER", ["M1"]), ("hans müller", ["M1"]), ("åse", ["M4"]), ("sa moor", ["M2", "M3"]),
    ("moore, hans", []),
])
def test_fuzzy_names_in_any_order(idx, typed, expected):
    assert accessions(idx, {"PatientName": typed}, fuzzy=True) == expected


def test_patient_ids_without_case_when_asked(idx):
    assert accessions(idx, {"PatientID": "AB12"}) == []  # DICOM: IDs are case-sensitive
    assert accessions(idx, {"PatientID": "AB12"}, case_sensitive_ids=False) == ["M1"]
    assert accessions(idx, {"PatientID": "ms-*"}, case_sensitive_ids=False) == ["M2"]


def test_migration_folds_names_stored_before(tmp_path):
    import importlib

    core = make_core(tmp_path)
    try:
        core.store(synth.make_instance("CT", patient_name="Zoë^Ünal", patient_id="OLD1", accession="Z1"))
        db = core.index.db
        db.execute_sql('UPDATE "patient" SET "name_upper" = ? WHERE "patient_id" = ?', ("ZOË^ÜNAL", "OLD1"))
        assert accessions(core, {"PatientName": "zoe*"}) == []  # as an index written before folding
        importlib.import_module("appliance.index.migrations.0013_fold_names").up(None, db)
        assert accessions(core, {"PatientName": "zoe*"}) == ["Z1"]
        assert accessions(core, {"PatientName": "unal zoe"}, fuzzy=True) == ["Z1"]
    finally:
        core.index.close()
