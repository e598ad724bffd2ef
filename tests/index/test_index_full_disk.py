"""A disk that really fills up (a 1 MiB tmpfs): the store that does not fit fails with 0xA700,
nothing half-written is left, and everything stored before it is intact.

Needs permission to mount a tmpfs (root, as tests/run runs in CI); the reserve check that normally
refuses stores long before this point is tested in tests/dicom/test_core_bad_input.py.
"""
from __future__ import annotations

import io

import pytest

import synth
from appliance.errors import DiskFull
from appliance.index.reconcile import reconcile
from core_parts import make_core
from helpers import tmpfs


@pytest.fixture
def tiny_fs(tmp_path):
    with tmpfs(tmp_path / "tiny", "1m") as mount_point:
        yield mount_point


@pytest.mark.parametrize("writer_thread", [True, False], ids=["serving", "inline"])
def test_filling_the_disk(tiny_fs, writer_thread):
    core = make_core(tiny_fs / "data")
    if writer_thread:
        core.index.start()  # as when serving: the archive write overlaps the index transaction
    stored = []
    try:
        with pytest.raises(DiskFull) as err:
            for i in range(200):  # ~40 KB each: the 1 MiB disk is full long before 200
                buf = io.BytesIO()
                synth.make_instance("CT", patient_id="FULL1", instance_number=i).save_as(buf, enforce_file_format=True)
                stored.append(core.ingestor.store_bytes(buf.getvalue(), core.origin))
        assert err.value.dimse_status == 0xA700
        assert "full" in str(err.value)
        assert stored, "some objects fit before the disk filled"
        assert not list(core.archive._tmp_dir.iterdir())
        assert core.index.count("IMAGE", {}) == len(stored)
        assert reconcile(core.archive, core.index).clean
        for result in stored:
            core.archive.verify(result.object_id)
    finally:
        core.index.close()
