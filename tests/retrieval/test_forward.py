"""Auto-forwarding: a dcmtk storescp that is down at first, restarts of the appliance, and Orthanc."""
from __future__ import annotations

import io
import time

import pydicom
import readback
import synth
from helpers import dcmtk, free_port, wait_until
from retrieval_support import SCU_AE, Orthanc, StoreSCP, cli, dataset_bytes, start_box

FAST_RETRY = {"PACS_FORWARD_RETRY_INITIAL_SECONDS": "1", "PACS_FORWARD_RETRY_MAX_SECONDS": "1"}


def store(box, files):
    done = dcmtk("storescu", "-aet", SCU_AE, "-aec", "PACSBOX", "127.0.0.1", box.dicom_port, *files)
    assert done.returncode == 0, done.stderr


def job_states(box) -> dict[str, int]:
    """State -> count of forwarding jobs, read from the index beside the running server."""
    from indexkit import rows

    with readback.opened(box.data_dir) as (_archive, index):
        states: dict[str, int] = {}
        for job in rows(index, "ForwardJob"):
            states[job.state] = states.get(job.state, 0) + 1
            states["attempts"] = states.get("attempts", 0) + job.attempts
        return states


def status_line(box, destination: str) -> list[str]:
    out = cli(box.data_dir, "forward", "status").stdout
    for line in out.splitlines():
        if line.startswith(destination):
            return line.split()
    return []


def test_forward_waits_for_a_peer_that_is_down_and_survives_restarts(tmp_path):
    port = free_port()
    env = {"PACS_FORWARD_RULES": "READSCP", **FAST_RETRY}
    box = start_box(tmp_path / "box", env=env, peers=(("READSCP", port),))
    scp = StoreSCP(tmp_path / "received", ae_title="READSCP", port=port)
    try:
        files = synth.write_study(tmp_path / "in", n_series=1, per_series=3, patient_id="FWD1")
        store(box, files)
        # the peer is down: jobs stay pending, with the reason and attempts counted
        wait_until(lambda: job_states(box).get("attempts", 0) >= 1 and job_states(box).get("pending") == 3, 20, 0.2,
                   what="a failed forwarding attempt")
        status = cli(box.data_dir, "forward", "status").stdout
        assert status_line(box, "READSCP")[1:3] == ["3", "0"], status  # pending 3, sent 0
        assert "did not answer" in status, status

        box.stop()  # the queue is in the index: it survives a restart
        box.start()
        scp.start()
        wait_until(lambda: len(scp.files()) == 3, 20, 0.2, what="forwarded instances")
        wait_until(lambda: job_states(box).get("sent") == 3, 10, 0.2, what="jobs marked sent")
        stored = readback.stored(box.data_dir)
        for f in scp.files():
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            assert ds.SOPInstanceUID in stored

        box.stop()  # sent jobs are never sent again
        box.start()
        store(box, files)  # the same objects again: duplicates, not new work
        time.sleep(2)  # more than a retry period
        assert len(scp.files()) == 3
        assert job_states(box).get("sent") == 3 and "pending" not in job_states(box)
        assert status_line(box, "READSCP")[1:3] == ["0", "3"]
    finally:
        scp.stop()
        box.kill()


def test_orthanc_as_forward_target_and_move_destination(tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc", appliance_port=free_port())
    orthanc_port = orthanc.dicom_port
    box = None
    try:
        orthanc.start()
        box = start_box(tmp_path / "box", env={"PACS_FORWARD_RULES": "ORTHANC modality=CT", **FAST_RETRY},
                        peers=(("ORTHANC", orthanc_port),))
        ct = synth.write_study(tmp_path / "ct", n_series=1, per_series=2, patient_id="ORTH1")
        mr = [tmp_path / "mr.dcm"]
        synth.make_instance("MR", patient_id="ORTH2").save_as(mr[0], enforce_file_format=True)
        store(box, ct + mr)
        # only the CT matches the rule
        wait_until(lambda: len(orthanc.instance_ids()) == 2, 30, 0.3, what="Orthanc to receive the CT study")
        mr_study = pydicom.dcmread(mr[0]).StudyInstanceUID
        moved = dcmtk("movescu", "-S", "-aet", SCU_AE, "-aec", "PACSBOX", "-aem", "ORTHANC",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={mr_study}",
                      "127.0.0.1", box.dicom_port)
        assert moved.returncode == 0, moved.stderr
        assert len(orthanc.instance_ids()) == 3
        stored = readback.stored(box.data_dir)
        for orthanc_id in orthanc.instance_ids():
            raw = orthanc.instance_file(orthanc_id)
            uid = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID
            assert dataset_bytes(raw) == dataset_bytes(stored[uid]), "Orthanc got other bytes than we hold"
    finally:
        orthanc.stop()
        if box is not None:
            box.kill()
