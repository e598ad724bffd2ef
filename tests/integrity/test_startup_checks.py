"""A big index's start-up checks run after the node listens (issue 19): the quick check of its file, and what
happens when it finds damage (the appliance stops with exit 7, as a refusal at start would)."""
from __future__ import annotations

from io import BytesIO

import pytest

import synth
from helpers import free_port, wait_until

from appliance import app as app_mod
from appliance.cli import open_appliance
from appliance.config import load
from appliance.ingest import Origin
from appliance.index.rebuild import IndexNeedsRebuild



def _fill(data_dir, n: int) -> None:
    with open_appliance(data_dir) as app:
        for i in range(n):
            buf = BytesIO()
            synth.make_instance("CT", patient_id=f"QC{i // 20}", instance_number=i).save_as(
                buf, enforce_file_format=True)
            app.ingestor.store_bytes(buf.getvalue(), Origin("import"))


def _flip_page(path, fraction: float) -> None:
    """Overwrite bytes inside one page of the (closed) index file, as a disk error would."""
    offset = (int(path.stat().st_size * fraction) // 4096) * 4096 + 200
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(64)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def _env():
    return {"PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(free_port()), "PACS_STORAGE_RESERVE_MB": "1",
            "PACS_INTEGRITY_SAMPLE_SIZE": "0"}


@pytest.mark.sqlcipher  # the embedded file's own check
def test_a_big_index_is_quick_checked_after_start_and_damage_stops_the_appliance(data_dir, monkeypatch):
    _fill(data_dir, 150)
    index_db = data_dir / "index.db"
    monkeypatch.setattr(app_mod, "QUICK_CHECK_AT_START_BYTES", 0)  # every index file counts as big here

    parts = app_mod.Parts(load(data_dir, env=_env()), starting=True)
    _ = parts.index  # opened without reading every page ...
    assert parts.deferred_index_check is not None
    parts.deferred_index_check()  # ... which the deferred check then does: a sound file passes
    parts.close()

    _flip_page(index_db, 0.6)
    parts = app_mod.Parts(load(data_dir, env=_env()), starting=True)
    try:
        _ = parts.index
        with pytest.raises(IndexNeedsRebuild, match="index rebuild") as refused:
            parts.deferred_index_check()
        assert refused.value.exit_code == 7
    finally:
        parts.close()


def test_a_failed_deferred_check_stops_a_running_appliance(data_dir):
    appliance = app_mod.build(load(data_dir, env=_env()), with_web=False)

    def damaged():
        raise IndexNeedsRebuild("index.db: page 7 is damaged")

    appliance.deferred_index_check = damaged
    appliance.start()
    try:
        failure = wait_until(lambda: appliance.failure, 30, what="the deferred check's verdict")
        assert isinstance(failure, IndexNeedsRebuild)
    finally:
        appliance.stop()
