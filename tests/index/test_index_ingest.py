"""The one ingest path, without the network: validation, de-duplication, replacement policy, disk reserve."""
from __future__ import annotations

import io

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
import pytest

import synth
from appliance.errors import ConflictRejected, DiskFull, InvalidObject
from indexkit import rows
from appliance.records.instances import Outcome


def part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_stores_bytes_exactly(core):
    data = part10(synth.make_instance("CT", patient_id="ING1"))
    result = core.store(data)
    assert result.outcome is Outcome.STORED
    assert core.archive.read(result.object_id) == data
    row = rows(core.index, "Instance", sop_uid=result.sop_uid)[0]
    assert (row.object_id, row.size) == (result.object_id, len(data))


def test_identical_resend_stores_nothing_twice(core):
    data = part10(synth.make_instance("CT", patient_id="ING2"))
    first = core.store(data)
    again = core.store(data)
    assert again.outcome is Outcome.DUPLICATE and again.object_id == first.object_id
    assert list(core.archive.list_ids()) == [first.object_id]
    assert core.index.count("IMAGE", {}) == 1
    assert rows(core.index, "Study")[0].num_instances == 1


def test_different_object_same_uid_replaces_and_keeps_the_old(core):
    ds = synth.make_instance("CT", patient_id="ING3")
    old_bytes = part10(ds)
    old = core.store(old_bytes)
    ds.StudyDescription = "corrected"
    new = core.store(part10(ds))
    assert new.outcome is Outcome.REPLACED and new.object_id != old.object_id
    assert rows(core.index, "Instance", sop_uid=ds.SOPInstanceUID)[0].object_id == new.object_id
    kept = rows(core.index, "ReplacedObject", sop_uid=ds.SOPInstanceUID)[0]
    assert kept.object_id == old.object_id
    assert core.archive.read(old.object_id) == old_bytes  # recoverable
    assert core.index.count("IMAGE", {}) == 1 and rows(core.index, "Study")[0].num_instances == 1
    assert rows(core.index, "Study")[0].description == "corrected"


def test_reject_policy(core_factory):
    core = core_factory(on_conflict="reject")
    ds = synth.make_instance("CT", patient_id="ING4")
    first = core.store(ds)
    ds.StudyDescription = "changed"
    with pytest.raises(ConflictRejected) as err:
        core.store(ds)
    assert err.value.dimse_status == 0xC770  # a failure to report, not "out of resources" to retry
    assert list(core.archive.list_ids()) == [first.object_id]  # the newcomer's object was removed again
    assert len(rows(core.index, "ReplacedObject")) == 0


@pytest.mark.filterwarnings("ignore:End of file reached")
@pytest.mark.parametrize("data, reason", [
    (b"", "not a DICOM file"),
    (b"\0" * 128 + b"DICM" + b"\xff" * 300, ".+"),
    (b"hello, this is not DICOM at all" * 10, ".+"),
])
def test_garbage_is_invalid(core, data, reason):
    with pytest.raises(InvalidObject, match=reason) as err:
        core.store(data)
    assert 0xC000 <= err.value.dimse_status <= 0xCFFF
    assert not list(core.archive.list_ids())


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.99])
def test_truncated_is_invalid(core, keep):
    data = part10(synth.make_instance("CT", patient_id="ING5"))
    with pytest.raises(InvalidObject, match="truncated|not a readable"):
        core.store(data[: int(len(data) * keep)])
    assert not list(core.archive.list_ids()) and core.index.count("IMAGE", {}) == 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_missing_uids_are_invalid(core):
    ds = synth.make_instance("CT", patient_id="ING6")
    del ds.StudyInstanceUID
    with pytest.raises(InvalidObject, match="StudyInstanceUID is missing"):
        core.store(ds)
    ds = synth.make_instance("CT", patient_id="ING6")
    ds.SeriesInstanceUID = "1.2.abc"
    with pytest.raises(InvalidObject, match="not a valid UID"):
        core.store(ds)


def test_bare_dataset_gets_a_file_meta(core):
    ds = synth.make_instance("MR_IMPLICIT", patient_id="ING7")
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)  # no preamble, no file meta: as some CDs and old modalities write
    bare = buf.getvalue()
    result = core.store(bare)
    stored = core.archive.read(result.object_id)
    assert stored.endswith(bare) and stored[128:132] == b"DICM"
    assert pydicom.dcmread(io.BytesIO(stored)).SOPInstanceUID == ds.SOPInstanceUID


def test_below_reserve_is_refused_before_anything_is_written(core_factory):
    core = core_factory(reserve_bytes=1 << 60)
    with pytest.raises(DiskFull) as err:
        core.store(synth.make_instance("CT", patient_id="ING8"))
    assert err.value.dimse_status == 0xA700
    assert not list(core.archive.list_ids())


def test_an_object_that_would_eat_into_the_reserve_is_refused(core_factory):
    """Free space just above the reserve: a small object fits, one larger than the headroom does not.
    The free-space figure is pinned (other writers on this disk would move it); the real full disk is
    tested in test_index_full_disk.py and tests/dicom."""
    core = core_factory(reserve_bytes=64 << 20)
    core.archive.disk_free_bytes = lambda: (64 + 4) << 20  # 4 MiB of headroom
    core.store(synth.make_instance("CT", patient_id="ING9"))
    big = synth.make_instance("CT", patient_id="ING9")
    big.PixelData = b"\0" * (16 << 20)
    big.Rows, big.Columns, big.BitsAllocated, big.BitsStored, big.HighBit = 2048, 4096, 16, 16, 15
    with pytest.raises(DiskFull, match="this object needs 16 MiB") as err:
        core.store(big)
    assert err.value.dimse_status == 0xA700
    assert len(list(core.archive.list_ids())) == 1


def test_counts_stay_consistent_when_an_instance_names_another_patient(core):
    """A later instance of a stored study with a different PatientID (a corrected ID, a typo at the
    modality) is filed with its study: no empty patient or study rows, counts that add up."""
    first = synth.make_instance("CT", patient_id="ING-P1", patient_name="First^Id")
    core.store(first)
    second = synth.make_instance("CT", patient_id="ING-P2", patient_name="Second^Id",
                                 study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID)
    core.store(second)
    other_series = synth.make_instance("CT", patient_id="ING-P1", series_uid=first.SeriesInstanceUID)
    core.store(other_series)  # names another study for an existing series: filed with the series
    [patient], [study], [_series] = (rows(core.index, name) for name in ("Patient", "Study", "Series"))
    assert (patient.num_studies, patient.num_series, patient.num_instances) == (1, 1, 3)
    assert (study.num_series, study.num_instances) == (1, 3)
    images = core.index.search("IMAGE", {"PatientID": "ING-P1"})
    assert len(images) == 3
    for level in ("PATIENT", "STUDY", "SERIES"):
        for record in core.index.search(level, {}):
            assert record.get("NumberOfPatientRelatedInstances", 1) > 0


def test_counts_after_replacing_the_only_instance(core):
    ds = synth.make_instance("CT", patient_id="ING-R1")
    core.store(ds)
    ds.StudyDescription = "v2"
    core.store(ds)
    [patient], [study], [series] = (rows(core.index, name) for name in ("Patient", "Study", "Series"))
    assert (patient.num_studies, patient.num_series, patient.num_instances) == (1, 1, 1)
    assert (study.num_series, study.num_instances, series.num_instances) == (1, 1, 1)
    assert study.modalities == "\\CT\\"


def test_index_failure_removes_the_object_and_reports(core, monkeypatch):
    """If the index cannot record an object, nothing is acknowledged and nothing is left behind."""
    import appliance.ingest as ingest_mod

    def broken(*args, **kwargs):
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(core.index.studies, "record", broken)
    with pytest.raises(ingest_mod.StoreFailed) as err:
        core.store(synth.make_instance("CT", patient_id="ING9"))
    assert err.value.dimse_status == 0x0110 and "RuntimeError" in str(err.value)
    assert not list(core.archive.list_ids()) and not list(core.archive._tmp_dir.iterdir())


def test_concurrent_identical_stores_keep_one_copy(core):
    """Several senders delivering the same instance at once (group commit in the writer thread)."""
    from concurrent.futures import ThreadPoolExecutor

    core.index.start()
    data = part10(synth.make_instance("CT", patient_id="ING10"))
    others = [part10(synth.make_instance("CT", patient_id="ING10")) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(core.store, [data] * 8 + others))
    outcomes = [r.outcome for r in results[:8]]
    assert outcomes.count(Outcome.STORED) == 1 and outcomes.count(Outcome.DUPLICATE) == 7
    assert core.index.count("IMAGE", {}) == 5
    assert sorted(core.archive.list_ids()) == sorted(r.object_id for r in rows(core.index, "Instance"))
    assert len(rows(core.index, "Study")) == 5 and all(s.num_instances == 1 for s in rows(core.index, "Study"))
