"""The disaster drill, as an admin and a vendor engineer would run it, with real processes and dcmtk peers.

A running box receives studies over DICOM, `backup run` sends them to a folder,
`backup restore` rebuilds a fresh data directory from the folder and the
exported recovery key alone, and the restored box answers C-FIND with the same
results and C-MOVE/C-GET with byte-identical objects.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pydicom
import synth
from helpers import Server, dataset_bytes, dcmtk, free_port, run_cli as cli

SCU = "TESTSCU"


def find_all(server, tmp, level="STUDY", **keys):
    out = Path(tempfile.mkdtemp(dir=tmp))
    args = ["findscu", "-S", "-X", "-od", out, "-aet", SCU, "-aec", "PACSBOX", "-k", f"QueryRetrieveLevel={level}"]
    for k, v in keys.items():
        args += ["-k", f"{k}={v}" if v is not None else k]
    found = dcmtk(*args, "127.0.0.1", server.dicom_port)
    assert found.returncode == 0, found.stderr
    return sorted(repr(sorted((str(e.tag), str(e.value)) for e in pydicom.dcmread(p)))
                  for p in out.iterdir())


STUDY_KEYS = dict(PatientID="*", PatientName=None, StudyInstanceUID=None, StudyDate=None, AccessionNumber=None,
                  ModalitiesInStudy=None, NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None,
                  StudyDescription=None)


def move(server, tmp, scu_port, study_uid):
    out = Path(tempfile.mkdtemp(dir=tmp))
    # movescu +B (bit-preserving) ignores -od and writes into its working directory
    moved = subprocess.run(["movescu", "-S", "+B", "-aet", SCU, "-aec", "PACSBOX", "-aem", SCU, "--port",
                            str(scu_port), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                            "127.0.0.1", str(server.dicom_port)], cwd=out, capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0 and any(out.iterdir()), moved.stderr
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: dataset_bytes(p.read_bytes())
            for p in out.iterdir()}


def test_backup_then_restore_onto_a_fresh_box(data_dir, tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    env = {"PACS_BACKUP_TARGET": f"file://{nas}"}
    scu_port = free_port()
    cli("modality", "add", SCU, "127.0.0.1", scu_port, "--data", data_dir)
    files = (synth.write_study(tmp_path / "s1", n_series=2, per_series=2, patient_id="DRILL1", patient_name="DRILL^ONE")
             + synth.write_study(tmp_path / "s2", n_series=1, per_series=3, kind="MR", patient_id="DRILL2"))
    sent = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    studies = sorted({pydicom.dcmread(f).StudyInstanceUID for f in files})

    original = Server(data_dir, env=env).start()
    restored = None
    try:
        stored = dcmtk("storescu", "-aet", SCU, "-aec", "PACSBOX", "127.0.0.1", original.dicom_port, *files)
        assert stored.returncode == 0, stored.stderr
        # "Run now" from the command line while the box keeps running.
        run = cli("backup", "run", "--data", data_dir, env=env)
        assert "backup success: 7 objects sent" in run.stdout
        status = json.loads(cli("backup", "status", "--json", "--data", data_dir, env=env).stdout)
        assert status["status"]["warning"] is False and status["history"][0]["objects"] == 7
        verified = cli("backup", "verify", "--full", "--data", data_dir, env=env)
        assert "7 decrypted and authenticated" in verified.stdout and "offsite copy OK" in verified.stdout
        key_file = tmp_path / "recovery.txt"
        cli("keys", "export-recovery", "--output", key_file, "--data", data_dir)

        new_dir = tmp_path / "new-box"
        out = cli("backup", "restore", "--target", f"file://{nas}", "--recovery-key-file", key_file,
                  "--data", new_dir)
        assert "restored 7 of 7 objects" in out.stdout

        restored = Server(new_dir).start()
        assert find_all(restored, tmp_path, **STUDY_KEYS) == find_all(original, tmp_path, **STUDY_KEYS)
        assert len(find_all(original, tmp_path, "IMAGE", StudyInstanceUID=studies[0], SOPInstanceUID=None)) > 0
        for study in studies:
            image_keys = dict(StudyInstanceUID=study, SOPInstanceUID=None, InstanceNumber=None)
            assert find_all(restored, tmp_path, "IMAGE", **image_keys) == find_all(original, tmp_path, "IMAGE",
                                                                                  **image_keys)
        # The restored index still knows the C-MOVE destination; the objects come back byte for byte.
        from_restored, from_original = {}, {}
        for study in studies:
            from_restored.update(move(restored, tmp_path, scu_port, study))
            from_original.update(move(original, tmp_path, scu_port, study))
        assert set(from_restored) == set(sent)
        assert from_restored == from_original
    finally:
        original.kill()
        if restored:
            restored.kill()


def test_partial_restore_of_one_study_from_the_cli(data_dir, tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    env = {"PACS_BACKUP_TARGET": f"file://{nas}"}
    files = (synth.write_study(tmp_path / "a", n_series=1, per_series=2, patient_id="ONE")
             + synth.write_study(tmp_path / "b", n_series=1, per_series=2, patient_id="TWO"))
    server = Server(data_dir, env=env).start()
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *files).returncode == 0
    finally:
        server.stop()
    cli("backup", "run", "--data", data_dir, env=env)
    (tmp_path / "key").write_text(cli("keys", "export-recovery", "--data", data_dir).stdout)
    study = pydicom.dcmread(files[0]).StudyInstanceUID
    out = cli("backup", "restore", "--target", str(nas), "--recovery-key-file", tmp_path / "key",
              "--data", tmp_path / "one", "--study", study)
    assert "restored 2 of 2 objects" in out.stdout
    restored = Server(tmp_path / "one").start()
    try:
        found = find_all(restored, tmp_path, PatientID="*", StudyInstanceUID=None)
        assert len(found) == 1 and study in found[0]
    finally:
        restored.kill()
