"""The README's promise, end to end: echo, store with storescu, find with findscu."""
import synth
from helpers import dcmtk


def test_echo_store_find(server, tmp_path):
    assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port).returncode == 0
    files = synth.write_study(tmp_path / "study", n_series=1, per_series=2, patient_name="SMOKE^TEST",
                              patient_id="SMOKE1")
    sent = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *files)
    assert sent.returncode == 0, sent.stderr
    found = dcmtk("findscu", "-S", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=SMOKE1",
                  "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", server.dicom_port)
    assert found.returncode == 0, found.stderr
    assert "NumberOfStudyRelatedInstances" in found.stderr
    assert "[2 ]" in found.stderr
