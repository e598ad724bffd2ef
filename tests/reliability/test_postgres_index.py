"""A PostgreSQL index that is not this box's: the counterpart of a lost or old index file.

The embedded index is a file beside the archive (tests/reliability/test_index_rebuild.py); a PostgreSQL
index is a database a URL names, so "lost" looks different: [index] url names an empty database (a typo,
a recreated database or schema) or an older copy (a database restored from an old dump). Start-up must
refuse (exit 7, systemd does not restart on it), say what to check on the database server (there is no
local `index rebuild` for it), and change nothing: no tables made in the wrong database, no archive
object moved aside as an orphan.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from pydicom.uid import generate_uid

from appliance import config as config_mod
from appliance.app import Parts
from appliance.events import Events
from appliance.index.reconcile import TooManyOrphans, reconcile
from appliance.index_migration import set_index_url
from appliance.ingest import Ingestor, Origin
import synth
from helpers import CLI


@pytest.fixture
def pg_box(data_dir, index_url) -> Path:
    """A data directory on PostgreSQL holding ``STORED`` objects, not running."""
    if not index_url:
        pytest.skip("needs the PostgreSQL cluster (PACS_TEST_INDEX=postgresql)")
    parts = Parts(config_mod.load(data_dir, env={}))
    try:
        ingestor = Ingestor(parts.archive, parts.index, Events(), reserve_bytes=0)
        study, series = generate_uid(), generate_uid()
        for i in range(STORED):
            ingestor.store_bytes(synth.tiny_sr(1, study, series, i + 1), Origin("import"))
    finally:
        parts.close()
    return data_dir


STORED = 5  # fewer than reconciliation's orphan bound (20): only the start-up check stops this


def _tables(url: str) -> list[str]:
    schema = url.rsplit("search_path%3D", 1)[1]
    with psycopg.connect(url.split("?", 1)[0]) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]


def test_serve_refuses_an_empty_database_over_a_full_archive(pg_box, pg_cluster):
    empty = pg_cluster.fresh_url()
    set_index_url(pg_box, empty)  # [index] url now names a database that never held this box's index
    proc = subprocess.run(CLI + ["serve", "--data", str(pg_box)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "holds no index" in proc.stderr and "[index] url" in proc.stderr, proc.stderr
    assert "index rebuild" not in proc.stderr  # the embedded index's remedy; refused on PostgreSQL
    assert _tables(empty) == []  # refusing made nothing in the wrong database
    archive = Parts(config_mod.load(pg_box, env={})).archive
    assert len(list(archive.list_ids())) == STORED and not list((pg_box / "archive" / "orphans").glob("*"))


def test_a_mass_of_unindexed_objects_on_postgresql_names_the_database_remedy(pg_box):
    """An older copy of the database (most rows gone): reconciliation refuses, moves nothing, and says to
    restore the database on its server, not to run the embedded index's `index rebuild`."""
    parts = Parts(config_mod.load(pg_box, env={}))
    try:
        ingestor = Ingestor(parts.archive, parts.index, Events(), reserve_bytes=0)
        study, series = generate_uid(), generate_uid()
        for i in range(40):
            ingestor.store_bytes(synth.tiny_sr(2, study, series, i + 1), Origin("import"))
        parts.index.db.execute_sql("DELETE FROM instance WHERE series_id IN "
                                   "(SELECT id FROM series WHERE series_uid = ?)", (series,))
        with pytest.raises(TooManyOrphans, match="40 of 45 archive objects have no index row") as refused:
            reconcile(parts.archive, parts.index)
        assert "index rebuild" not in str(refused.value) and "[index] url" in str(refused.value)
        assert len(list(parts.archive.list_ids())) == 45  # nothing moved to orphans
    finally:
        parts.close()


def test_index_rebuild_refuses_a_postgresql_index_and_changes_nothing(pg_box):
    """`index rebuild` makes the embedded index file: on a PostgreSQL box it says so and leaves everything."""
    done = subprocess.run(CLI + ["index", "rebuild", "--data", str(pg_box)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PostgreSQL database" in done.stderr and "restore the database on its server" in done.stderr
    assert not list(pg_box.glob("index.db*"))
    parts = Parts(config_mod.load(pg_box, env={}))
    try:
        assert parts.index.objects.count() == STORED
    finally:
        parts.close()


def test_verify_and_index_check_on_a_sound_postgresql_box_find_nothing_wrong(pg_box):
    """The embedded file's integrity check is not asked of a PostgreSQL index (there is no index.db: it
    reported that as a DAMAGED index and exited 4); rows against the archive still are."""
    for command in (["verify", "--sample", "3"], ["index", "check"]):
        done = subprocess.run(CLI + command + ["--data", str(pg_box)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "DAMAGED" not in done.stdout and f"index: {STORED} object(s) named" in done.stdout, done.stdout
        assert done.stdout.splitlines()[1].endswith("rows and archive agree"), done.stdout


def test_index_check_on_postgresql_names_the_database_remedy_for_unindexed_objects(pg_box):
    parts = Parts(config_mod.load(pg_box, env={}))
    try:
        parts.index.db.execute_sql("DELETE FROM instance")
    finally:
        parts.close()
    done = subprocess.run(CLI + ["index", "check", "--data", str(pg_box)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"{STORED} archive object(s) have no index row" in done.stdout and "[index] url" in done.stdout
    assert "index rebuild" not in done.stdout, done.stdout
