"""No patient name or ID in plaintext anywhere in the data directory, nor in the log (docs/DESIGN.md invariant 4).

A study with a distinctive synthetic identity is stored, re-sent, replaced and
queried (by name and by ID), with the server logging at DEBUG; then every file
under the data directory (index.db and its -wal/-shm, archive, tmp, inbox, ...)
and the server's log are searched for the identity's bytes, in the spellings a
leak would take.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pydicom

import synth
from helpers import Server, dcmtk

NAME = "Quixotefrob^Zanzibaria"
PATIENT_ID = "PRIVZX918273"
BIRTH_DATE = "19311129"


def needles() -> list[bytes]:
    spellings = {NAME, NAME.upper(), NAME.lower(), NAME.split("^")[0], NAME.split("^")[1].upper(), PATIENT_ID,
                 PATIENT_ID.lower()}
    out = []
    for text in spellings:
        out += [text.encode("ascii"), text.encode("utf-16-le")]
    return out


def leaks(path: Path) -> list[str]:
    data = path.read_bytes()
    return [n.decode("latin-1") for n in needles() if n in data]


def scan(data_dir: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(data_dir)): found for p in sorted(data_dir.rglob("*"))
            if p.is_file() and (found := leaks(p))}


def test_no_patient_identity_on_disk_or_in_logs(data_dir, tmp_path):
    srv = Server(data_dir, env={"PACS_LOG_LEVEL": "DEBUG"}).start()
    try:
        files = synth.write_study(tmp_path / "src", n_series=2, per_series=2, patient_name=NAME,
                                  patient_id=PATIENT_ID, birth_date=BIRTH_DATE)
        # a different object under an existing SOP Instance UID: replaced, the old one kept
        changed = pydicom.dcmread(files[0])
        changed.StudyDescription = "corrected"
        replacement = tmp_path / "replacement.dcm"
        changed.save_as(replacement, enforce_file_format=True)
        for batch in (files, files[:2], [replacement]):  # store, identical re-send, replacement
            done = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *batch)
            assert done.returncode == 0, done.stderr
        for key in (f"PatientName={NAME.split('^')[0].lower()}*", f"PatientID={PATIENT_ID}"):
            found = dcmtk("findscu", "-v", "-S", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=STUDY", "-k", key,
                          "-k", "PatientName", "-k", "PatientID", "-k", "PatientBirthDate",
                          "127.0.0.1", srv.dicom_port)
            assert found.returncode == 0 and NAME in found.stderr, found.stderr  # the data is there...
        # ...but not readable on the disk, even with the WAL and shared memory files live
        assert (data_dir / "index.db-wal").exists()
        assert scan(data_dir) == {}
    finally:
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(20)
    assert scan(data_dir) == {}
    log = srv.log()
    assert "C-STORE" in log or "C-FIND" in log  # the log did record the activity
    for needle in needles() + [BIRTH_DATE.encode()]:
        assert needle.decode("latin-1") not in log, f"patient data in the server log: {needle!r}"
