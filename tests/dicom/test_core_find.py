"""C-FIND with dcmtk's findscu, Patient Root (-P) and Study Root (-S), at every level.

The responses are read from the files ``findscu -X`` writes (one per match),
not from its log, so values and empty keys can be checked exactly.
"""
from __future__ import annotations


import pydicom
import pytest
from pydicom.uid import generate_uid

import synth
from helpers import dcmtk

ALICE = dict(patient_name="Findtest^Alice", patient_id="FIND-A", birth_date="19800202", sex="F")
BOB = dict(patient_name="Findtest^Bob", patient_id="FIND-B", birth_date="19750505", sex="M")


class Catalog:
    """What was stored: study and series UIDs by name."""

    def __init__(self):
        self.study: dict[str, str] = {}
        self.series: dict[str, str] = {}
        self.sops: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def catalog(shared_server, tmp_path_factory) -> Catalog:
    """Alice: A1 (2025-01-10, a CT series of 2 and an MR series of 3), A2 (2025-03-01, MR 1).
    Bob: B1 (2025-06-15, US 1)."""
    cat = Catalog()
    src = tmp_path_factory.mktemp("find-src")
    plan = [("A1", "20250110", ALICE, [("A1-CT", "CT", 2), ("A1-MR", "MR", 3)]),
            ("A2", "20250301", ALICE, [("A2-MR", "MR", 1)]),
            ("B1", "20250615", BOB, [("B1-US", "US", 1)])]
    files = []
    for study, date, who, series_list in plan:
        cat.study[study] = generate_uid()
        for number, (series, kind, count) in enumerate(series_list, start=1):
            cat.series[series] = generate_uid()
            cat.sops[series] = []
            for i in range(count):
                ds = synth.make_instance(kind, study_uid=cat.study[study], series_uid=cat.series[series],
                                         instance_number=i + 1, series_number=number, study_date=date,
                                         accession=f"ACC-{study}", study_description=f"Study {study}", **who)
                path = src / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(path, enforce_file_format=True)
                cat.sops[series].append(str(ds.SOPInstanceUID))
                files.append(path)
    done = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", shared_server.dicom_port, *files)
    assert done.returncode == 0, done.stderr
    return cat


@pytest.fixture
def find(shared_server, tmp_path):
    """Run findscu with ``model`` ("-P" or "-S") and keys; return the response datasets."""
    counter = iter(range(1000))

    def run(model: str, level: str, **keys) -> list[pydicom.Dataset]:
        out = tmp_path / f"find{next(counter)}"
        out.mkdir()
        args = [model, "-X", "-od", out, "-aec", "PACSBOX", "-k", f"QueryRetrieveLevel={level}"]
        for key, value in keys.items():
            args += ["-k", f"{key}={value}" if value is not None else key]
        done = dcmtk("findscu", *args, "127.0.0.1", shared_server.dicom_port)
        assert done.returncode == 0, done.stderr
        assert "E: " not in done.stderr, done.stderr  # findscu exits 0 even on a bad key
        responses = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
        for rsp in responses:  # every requested key comes back, asked-for values or empty
            for key in keys:
                assert key in rsp, f"{key} missing from a {level} response"
            assert rsp.QueryRetrieveLevel == level
        return responses

    return run


MODELS = pytest.mark.parametrize("model", ["-P", "-S"])


def test_patient_level_exact_id(catalog, find):
    [rsp] = find("-P", "PATIENT", PatientID="FIND-A", PatientName=None, PatientBirthDate=None, PatientSex=None,
                 NumberOfPatientRelatedStudies=None, NumberOfPatientRelatedSeries=None,
                 NumberOfPatientRelatedInstances=None, PatientComments=None)
    assert str(rsp.PatientName) == "Findtest^Alice"
    assert rsp.PatientBirthDate == "19800202" and rsp.PatientSex == "F"
    assert int(rsp.NumberOfPatientRelatedStudies) == 2
    assert int(rsp.NumberOfPatientRelatedSeries) == 3
    assert int(rsp.NumberOfPatientRelatedInstances) == 6
    assert rsp.PatientComments in ("", None)  # not kept by the index: returned empty


def test_patient_name_wildcard_is_case_insensitive(catalog, find):
    found = find("-P", "PATIENT", PatientName="findtest^*", PatientID=None)
    assert sorted(r.PatientID for r in found) == ["FIND-A", "FIND-B"]
    assert [r.PatientID for r in find("-P", "PATIENT", PatientName="FINDTEST^B?B", PatientID=None)] == ["FIND-B"]
    assert find("-P", "PATIENT", PatientName="Findtest^Nobody*", PatientID=None) == []


def test_patient_level_is_not_in_study_root(catalog, shared_server, tmp_path):
    done = dcmtk("findscu", "-v", "-X", "-od", tmp_path, "-S", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=FIND-A",
                 "127.0.0.1", shared_server.dicom_port)
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in done.stderr, done.stderr
    assert not list(tmp_path.glob("rsp*.dcm"))


@MODELS
def test_study_level_keys_and_counts(catalog, find, model):
    [rsp] = find(model, "STUDY", PatientID="FIND-A", StudyInstanceUID=catalog.study["A1"], StudyDate=None,
                 StudyTime=None, AccessionNumber=None, StudyDescription=None, PatientName=None,
                 ModalitiesInStudy=None, NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None,
                 ReferringPhysicianName=None, StudyID=None)
    assert rsp.StudyDate == "20250110" and rsp.AccessionNumber == "ACC-A1"
    assert rsp.StudyDescription == "Study A1" and str(rsp.PatientName) == "Findtest^Alice"
    assert list(rsp.ModalitiesInStudy) == ["CT", "MR"]
    assert int(rsp.NumberOfStudyRelatedSeries) == 2
    assert int(rsp.NumberOfStudyRelatedInstances) == 5


@MODELS
def test_study_date_ranges(catalog, find, model):
    def studies(date: str) -> set[str]:
        found = find(model, "STUDY", PatientName="Findtest*", StudyDate=date, StudyInstanceUID=None)
        names = {v: k for k, v in catalog.study.items()}
        return {names[r.StudyInstanceUID] for r in found}

    assert studies("20250101-20250131") == {"A1"}
    assert studies("20250201-") == {"A2", "B1"}
    assert studies("-20250301") == {"A1", "A2"}
    assert studies("20250615") == {"B1"}
    assert studies("") == {"A1", "A2", "B1"}  # universal matching


@MODELS
def test_study_uid_list_and_modalities(catalog, find, model):
    uids = f"{catalog.study['A1']}\\{catalog.study['B1']}"
    found = find(model, "STUDY", StudyInstanceUID=uids, PatientID=None)
    assert {r.StudyInstanceUID for r in found} == {catalog.study["A1"], catalog.study["B1"]}
    mr = find(model, "STUDY", PatientID="FIND-A", ModalitiesInStudy="MR", StudyInstanceUID=None)
    assert {r.StudyInstanceUID for r in mr} == {catalog.study["A1"], catalog.study["A2"]}
    ct = find(model, "STUDY", PatientName="findtest*", ModalitiesInStudy="CT", StudyInstanceUID=None)
    assert [r.StudyInstanceUID for r in ct] == [catalog.study["A1"]]


@MODELS
def test_series_level(catalog, find, model):
    found = find(model, "SERIES", PatientID="FIND-A", StudyInstanceUID=catalog.study["A1"], SeriesInstanceUID=None,
                 Modality=None, SeriesNumber=None, NumberOfSeriesRelatedInstances=None)
    by_uid = {r.SeriesInstanceUID: r for r in found}
    assert set(by_uid) == {catalog.series["A1-CT"], catalog.series["A1-MR"]}
    ct, mr = by_uid[catalog.series["A1-CT"]], by_uid[catalog.series["A1-MR"]]
    assert (ct.Modality, int(ct.SeriesNumber), int(ct.NumberOfSeriesRelatedInstances)) == ("CT", 1, 2)
    assert (mr.Modality, int(mr.SeriesNumber), int(mr.NumberOfSeriesRelatedInstances)) == ("MR", 2, 3)
    only_mr = find(model, "SERIES", PatientID="FIND-A", StudyInstanceUID=catalog.study["A1"], Modality="MR",
                   SeriesInstanceUID=None)
    assert [r.SeriesInstanceUID for r in only_mr] == [catalog.series["A1-MR"]]


@MODELS
def test_image_level(catalog, find, model):
    series = catalog.series["A1-MR"]
    found = find(model, "IMAGE", PatientID="FIND-A", StudyInstanceUID=catalog.study["A1"],
                 SeriesInstanceUID=series, SOPInstanceUID=None, SOPClassUID=None, InstanceNumber=None)
    assert sorted(r.SOPInstanceUID for r in found) == sorted(catalog.sops["A1-MR"])
    assert sorted(int(r.InstanceNumber) for r in found) == [1, 2, 3]
    assert {r.SOPClassUID for r in found} == {"1.2.840.10008.5.1.4.1.1.4"}
    two = catalog.sops["A1-MR"][:2]
    picked = find(model, "IMAGE", PatientID="FIND-A", StudyInstanceUID=catalog.study["A1"], SeriesInstanceUID=series,
                  SOPInstanceUID="\\".join(two))
    assert sorted(r.SOPInstanceUID for r in picked) == sorted(two)


def test_sequence_key_and_unknown_keys_come_back_empty(catalog, find):
    [rsp] = find("-S", "STUDY", StudyInstanceUID=catalog.study["B1"], ProcedureCodeSequence=None,
                 PatientComments=None, EthnicGroup=None)
    assert len(rsp.ProcedureCodeSequence) == 0


def test_malformed_value_is_a_failure_not_a_crash(catalog, shared_server, tmp_path):
    done = dcmtk("findscu", "-v", "-S", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyDate=2025-01-01", "127.0.0.1", shared_server.dicom_port)
    assert "Received Final Find Response (Failed: UnableToProcess)" in done.stderr, done.stderr
    assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", shared_server.dicom_port).returncode == 0


def test_non_ascii_names(shared_server, find, tmp_path):
    ds = synth.make_instance("CT", patient_name="Müller^Jürgen", patient_id="FIND-UML")
    ds.SpecificCharacterSet = "ISO_IR 100"
    path = tmp_path / "latin1.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", shared_server.dicom_port, path).returncode == 0
    found = find("-P", "PATIENT", SpecificCharacterSet="ISO_IR 192", PatientName="müller*", PatientID=None)
    assert [(str(r.PatientName), r.PatientID) for r in found] == [("Müller^Jürgen", "FIND-UML")]
