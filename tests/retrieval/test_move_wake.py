"""C-MOVE: the requestor hears from us as soon as the sub-association connects.

dcmtk's movescu looks at its listening socket without waiting, then waits up to a second
for data on the C-MOVE association; a sub-association arriving in that second waited for
it. So the box sends a first Pending response (every sub-operation remaining, none done)
once the sub-association's connection is made (appliance/dicom/move.py, PendingWake).
"""
from __future__ import annotations

import subprocess

import pydicom
import synth
from retrieval_support import SCU_AE
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove


def test_first_move_response_is_pending_with_nothing_done(box, tmp_path):
    files = synth.write_study(tmp_path / "in", n_series=1, per_series=3, patient_id="MOVEWAKE")
    done = subprocess.run(["storescu", "-aet", SCU_AE, "-aec", "PACSBOX", "127.0.0.1", str(box.dicom_port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    received = []

    def on_store(event):
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = AE(ae_title=SCU_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    server = ae.start_server(("127.0.0.1", box.scu_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX")
        assert assoc.is_established
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = pydicom.dcmread(files[0]).StudyInstanceUID
        statuses = [status for status, _identifier in
                    assoc.send_c_move(query, SCU_AE, StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
    finally:
        server.shutdown()
    first, final = statuses[0], statuses[-1]
    assert first.Status == 0xFF00
    assert (first.NumberOfRemainingSuboperations, first.NumberOfCompletedSuboperations,
            first.NumberOfFailedSuboperations, first.NumberOfWarningSuboperations) == (3, 0, 0, 0)
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
    assert len(statuses) == 1 + 3 + 1  # the wake-up, one per sub-operation, the final one
    assert sorted(received) == sorted(pydicom.dcmread(f).SOPInstanceUID for f in files)
