"""index/transfer.py: every table of one index copied into another, empty one, in batches, counted.

The source is the test's index (the embedded file, or PostgreSQL in the PostgreSQL pass); the destination
a new SQLCipher file, and on the PostgreSQL pass also a second PostgreSQL schema.
"""
from __future__ import annotations

import pytest
import synth

from appliance.records.audit import AuditLog
from appliance.index import Index, open_index
from appliance.index.transfer import TransferError, copy, tables


def _fill(core) -> None:
    study = synth.generate_uid()
    for i in range(5):  # more rows than the batch below, in instance
        core.store(synth.make_instance("CT", patient_id="TR1", patient_name="MÜLLER^TRANS", study_uid=study,
                                       instance_number=i + 1))
    core.index.peers.add("TRPEER", host="127.0.0.1", port=104)
    AuditLog(core.index).record("test.one", "tester", detail="first")
    AuditLog(core.index).record("test.two", "tester", detail="second")


def _dump(db) -> dict[str, list[tuple]]:
    out = {}
    for table in tables(db):
        rows = db.execute_sql(f'SELECT * FROM "{table}"').fetchall()
        out[table] = sorted((tuple(str(v) if v is not None else None for v in row) for row in rows), key=repr)
    return out


@pytest.fixture
def destinations(tmp_path, core, pg_cluster):
    made = [("sqlite", lambda: open_index(tmp_path / "copy.db", core.keys.load().index_key))]
    if pg_cluster is not None:
        made.append(("postgresql", lambda: open_index(tmp_path / "unused", b"", url=pg_cluster.fresh_url())))
    return made


def test_every_table_is_copied_in_batches_and_counted(core, destinations):
    _fill(core)
    source = _dump(core.index.db)
    for _name, make in destinations:
        dst = make()
        try:
            report = copy(core.index.db, dst, batch=2)
            assert report.rows["instance"] == 5 and report.rows["audit_entry"] == 2
            assert report.rows == {t: len(rows) for t, rows in source.items()}
            assert _dump(dst) == source
            copied = Index(dst)
            assert AuditLog(copied).verify().ok
            assert [s["PatientName"] for s in copied.search("STUDY", {"PatientName": "muller*"})] == ["MÜLLER^TRANS"]
            # New rows take ids after the copied ones (PostgreSQL's sequences were moved on).
            assert copied.peers.add("TRPEER2", host="127.0.0.1", port=105) is not None
            assert len(copied.peers.list()) == 2
        finally:
            dst.close()


def test_a_destination_with_rows_is_refused_and_left_as_it_was(core, destinations):
    _fill(core)
    for _name, make in destinations:
        dst = make()
        try:
            Index(dst).peers.add("ALREADY", host="127.0.0.1", port=104)
            with pytest.raises(TransferError, match="already holds an index"):
                copy(core.index.db, dst)
            assert [p.ae_title for p in Index(dst).peers.list()] == ["ALREADY"]
            assert dst.execute_sql('SELECT count(*) FROM "instance"').fetchone()[0] == 0
        finally:
            dst.close()
