"""Modality workflow: worklist (dcmtk findscu -W), MPPS and storage commitment (pynetdicom SCU), allow-list."""
from __future__ import annotations

import datetime
import threading

import pydicom
import synth
from helpers import dcmtk, free_port, wait_until
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel, Verification
from retrieval_support import SCU_AE, cli


def add_entry(box, *args) -> str:
    done = cli(box.data_dir, "worklist", "add", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("study ")[1].strip(" )\n")


def worklist_find(box, *keys) -> str:
    # return keys first: a later -k for the same key replaces an earlier one
    done = dcmtk("findscu", "-W", "-aet", SCU_AE, "-aec", "PACSBOX",
                 "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber", "-k", "StudyInstanceUID",
                 "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
                 "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
                 *[a for k in keys for a in ("-k", k)], "127.0.0.1", box.dicom_port)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_worklist_matching_with_findscu(box):
    today = datetime.date.today().strftime("%Y%m%d")
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).strftime("%Y%m%d")
    add_entry(box, "--patient-name", "WL^ALPHA", "--patient-id", "WL1", "--modality", "US", "--station-ae", "US1",
              "--accession", "ACC-WL1", "--time", "0900")
    add_entry(box, "--patient-name", "WL^BETA", "--patient-id", "WL2", "--modality", "DX", "--station-ae", "DX1",
              "--accession", "ACC-WL2", "--time", "1000")
    add_entry(box, "--patient-name", "WL^GAMMA", "--patient-id", "WL3", "--modality", "US", "--station-ae", "US1",
              "--accession", "ACC-WL3", "--date", tomorrow)

    out = worklist_find(box, "ScheduledProcedureStepSequence[0].Modality=US",
                        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={today}")
    assert "WL^ALPHA" in out and "WL^BETA" not in out and "WL^GAMMA" not in out
    assert "US1" in out and "ACC-WL1" in out

    out = worklist_find(box, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=US1",
                        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={today}-{tomorrow}")
    assert "WL^ALPHA" in out and "WL^GAMMA" in out and "WL^BETA" not in out

    out = worklist_find(box, "PatientName=wl^b*")  # names match case-insensitively, with wildcards
    assert "WL^BETA" in out and "WL^ALPHA" not in out

    listing = cli(box.data_dir, "worklist", "list", "--modality", "US").stdout
    assert "WL^ALPHA" in listing and "WL^GAMMA" in listing and "WL^BETA" not in listing


def mpps_dataset(study_uid: str, status: str) -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = ""
    step.ScheduledProcedureStepID = ""
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName = "MPPS^TEST"
    ds.PatientID = "MPPS1"
    ds.Modality = "US"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "US1"
    ds.PerformedProcedureStepStartDate = "20260101"
    ds.PerformedProcedureStepStartTime = "0900"
    ds.PerformedProcedureStepStatus = status
    return ds


def status_of(box, accession: str) -> str:
    for line in cli(box.data_dir, "worklist", "list").stdout.splitlines():
        if accession in line:
            return line
    return ""


def test_mpps_updates_the_worklist_entry(box):
    study_uid = add_entry(box, "--patient-name", "MPPS^TEST", "--patient-id", "MPPS1", "--modality", "US",
                          "--accession", "ACC-MPPS")
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    sop_uid = generate_uid()
    status, _ = assoc.send_n_create(mpps_dataset(study_uid, "IN PROGRESS"), ModalityPerformedProcedureStep, sop_uid)
    assert status.Status == 0x0000
    assert "IN PROGRESS" in status_of(box, "ACC-MPPS")

    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20260101"
    done.PerformedProcedureStepEndTime = "0930"
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, sop_uid)
    assert status.Status == 0x0000
    assert "COMPLETED" in status_of(box, "ACC-MPPS")

    again = Dataset()
    again.PerformedProcedureStepStatus = "DISCONTINUED"
    status, _ = assoc.send_n_set(again, ModalityPerformedProcedureStep, sop_uid)
    assert status.Status == 0x0110  # a completed step may no longer be updated
    status, _ = assoc.send_n_set(again, ModalityPerformedProcedureStep, generate_uid())
    assert status.Status == 0x0112  # no such step
    assoc.release()

    # completed work no longer shows up for the modality
    out = worklist_find(box, "AccessionNumber=ACC-MPPS")
    assert "ACC-MPPS" not in out


def commitment_request(uids: list[tuple[str, str]]) -> tuple[str, Dataset]:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    refs = []
    for sop_class, sop_uid in uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_uid
        refs.append(ref)
    ds.ReferencedSOPSequence = refs
    return ds.TransactionUID, ds


def stored_and_missing(box, tmp_path):
    files = synth.write_study(tmp_path / "sc", n_series=1, per_series=2, patient_id="COMMIT1")
    done = dcmtk("storescu", "-aet", SCU_AE, "-aec", "PACSBOX", "127.0.0.1", box.dicom_port, *files)
    assert done.returncode == 0, done.stderr
    stored = [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in map(pydicom.dcmread, files)]
    missing = (stored[0][0], generate_uid())
    return stored, missing


def check_report(report: dict, transaction_uid: str, stored, missing) -> None:
    ds = report["dataset"]
    assert report["event_type"] == 2  # some failed
    assert ds.TransactionUID == transaction_uid
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedSOPSequence} == {u for _, u in stored}
    assert [r.ReferencedSOPInstanceUID for r in ds.FailedSOPSequence] == [missing[1]]
    assert ds.FailedSOPSequence[0].FailureReason == 0x0112


def test_storage_commitment_on_the_same_association(box, tmp_path):
    stored, missing = stored_and_missing(box, tmp_path)
    report: dict = {}
    got = threading.Event()

    def on_report(event):
        report["event_type"] = event.event_type
        report["dataset"] = event.event_information
        got.set()
        return 0x0000, None

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    transaction_uid, request = commitment_request(stored + [missing])
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
    assert status.Status == 0x0000
    assert got.wait(15), "no N-EVENT-REPORT on the open association"
    assoc.release()
    check_report(report, transaction_uid, stored, missing)


def test_storage_commitment_on_a_new_association(box, tmp_path):
    stored, missing = stored_and_missing(box, tmp_path)
    report: dict = {}
    got = threading.Event()

    def on_report(event):
        report["event_type"] = event.event_type
        report["dataset"] = event.event_information
        got.set()
        return 0x0000, None

    port = free_port()
    ae_title = "COMMITSCU"
    assert cli(box.data_dir, "modality", "add", ae_title, "127.0.0.1", str(port)).returncode == 0
    listener = AE(ae_title=ae_title)
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    listener.add_supported_context(Verification)
    server = listener.start_server(("127.0.0.1", port), block=False,
                                   evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        ae = AE(ae_title=ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX")
        assert assoc.is_established
        transaction_uid, request = commitment_request(stored + [missing])
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assert status.Status == 0x0000
        assoc.release()  # a modality that does not wait: the report must come on a new association
        assert got.wait(15), "no N-EVENT-REPORT on a new association"
        check_report(report, transaction_uid, stored, missing)
    finally:
        server.shutdown()


def test_registered_peers_feed_the_allow_list(box):
    # TESTSCU is registered, so the allow-list is no longer empty: unknown callers are turned away.
    assert dcmtk("echoscu", "-aet", SCU_AE, "-aec", "PACSBOX", "127.0.0.1", box.dicom_port).returncode == 0
    refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "PACSBOX", "127.0.0.1", box.dicom_port)
    assert refused.returncode != 0
    assert cli(box.data_dir, "modality", "add", "STRANGER", "127.0.0.1", "104").returncode == 0
    assert dcmtk("echoscu", "-aet", "STRANGER", "-aec", "PACSBOX", "127.0.0.1", box.dicom_port).returncode == 0
    assert cli(box.data_dir, "modality", "remove", "STRANGER").returncode == 0
    assert dcmtk("echoscu", "-aet", "STRANGER", "-aec", "PACSBOX", "127.0.0.1", box.dicom_port).returncode != 0


def test_modality_echo_from_the_cli(box):
    # the appliance can echo itself once it knows itself as a peer
    assert cli(box.data_dir, "modality", "add", "SELF", "127.0.0.1", str(box.dicom_port)).returncode == 0
    done = cli(box.data_dir, "modality", "echo", "SELF")
    # SELF calls PACSBOX with our AE title as calling AE (PACSBOX), which is not registered: refused.
    assert done.returncode == 1 and "rejected" in done.stdout
    assert cli(box.data_dir, "modality", "add", "PACSBOX", "127.0.0.1", str(box.dicom_port)).returncode == 0
    done = cli(box.data_dir, "modality", "echo", "PACSBOX")
    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stdout
    listing = cli(box.data_dir, "modality", "list").stdout
    assert "PACSBOX" in listing and "SELF" in listing


def test_registered_permissions_are_enforced(box, tmp_path):
    done = cli(box.data_dir, "modality", "add", "LIMITED", "127.0.0.1", "104", "--no-store", "--no-query",
               "--no-retrieve")
    assert done.returncode == 0, done.stderr
    files = synth.write_study(tmp_path / "perm", n_series=1, per_series=1, patient_id="PERM1")

    def refused_store():
        sent = dcmtk("storescu", "-v", "-aet", "LIMITED", "-aec", "PACSBOX", "127.0.0.1", box.dicom_port, *files)
        return "0x124" in sent.stderr  # dcmtk: "Received Store Response (Unknown Status: 0x124)"

    wait_until(refused_store, 10, 0.5, what="the store permission to apply")  # permissions are cached for 2 s
    found = dcmtk("findscu", "-v", "-S", "-aet", "LIMITED", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", "PatientID=PERM1", "127.0.0.1", box.dicom_port)
    assert "Final Find Response (Unknown Status: 0x124)" in found.stderr, found.stderr
    # the worklist is a service of its own (dicom/worklist.py) and checks the same permission
    polled = dcmtk("findscu", "-v", "-W", "-aet", "LIMITED", "-aec", "PACSBOX", "-k", "PatientName=", "127.0.0.1",
                   box.dicom_port)
    assert "Final Find Response (Unknown Status: 0x124)" in polled.stderr, polled.stderr
    got = dcmtk("getscu", "-v", "-S", "-aet", "LIMITED", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=STUDY",
                "-k", "StudyInstanceUID=1.2.3", "127.0.0.1", box.dicom_port)
    assert "Received C-GET Response (Failed: UnableToProcess)" in got.stderr, got.stderr  # 0xC001


def test_worklist_returns_the_character_set_it_was_asked_for(box):
    add_entry(box, "--patient-name", "WL^ASCII", "--patient-id", "WLCS1", "--modality", "US", "--accession", "ACC-CS1")
    add_entry(box, "--patient-name", "WL^Ünïcode", "--patient-id", "WLCS2", "--modality", "US",
              "--accession", "ACC-CS2")
    ascii_only = worklist_find(box, "PatientID=WLCS1", "SpecificCharacterSet=")
    assert "(0008,0005) CS (no value available)" in ascii_only or "(0008,0005) CS [" in ascii_only, ascii_only
    latin = worklist_find(box, "PatientID=WLCS1", "SpecificCharacterSet=ISO_IR 100")
    assert "(0008,0005) CS [ISO_IR 100]" in latin, latin
    unicode_ = worklist_find(box, "PatientID=WLCS2")  # not asked, but a value is not ASCII
    assert "(0008,0005) CS [ISO_IR 192]" in unicode_, unicode_


def test_worklist_add_enforces_value_lengths(box):
    too_long = cli(box.data_dir, "worklist", "add", "--patient-name", "WL^LONG", "--patient-id", "WLLEN",
                   "--modality", "US", "--accession", "A" * 17)
    assert too_long.returncode != 0
    assert "accession: at most 16 characters (DICOM SH), got 17" in too_long.stderr + too_long.stdout
    bad_ae = cli(box.data_dir, "worklist", "add", "--patient-name", "WL^LONG", "--patient-id", "WLLEN",
                 "--modality", "US", "--station-ae", "STATION_TITLE_TOO_LONG")
    assert bad_ae.returncode != 0 and "station ae: at most 16" in bad_ae.stderr + bad_ae.stdout
    assert "WLLEN" not in cli(box.data_dir, "worklist", "list").stdout
