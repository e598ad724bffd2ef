"""The DICOMweb caches hold what their settings say, measured with tracemalloc, not what they charge themselves.

Found by the soak (bench/load.py --soak): the header cache was bounded by an entry
count only (5,000 headers of 20-200 KiB each) and each cached header pinned its
source reader with a decrypted chunk of up to 1 MiB; the object cache charged an
object's size on disk while the parsed dataset held ~4-5x that for small CTs.
"""
from __future__ import annotations

import gc
import io
import tracemalloc

import pytest

import synth
from helpers import init_data_dir
from indexkit import instances

from appliance.app import build
from appliance.config import load
from appliance.convert.render_cache import LRUCache
from appliance.ingest import Origin

BUDGET_MB = 1


@pytest.fixture(scope="module")
def dicomweb(tmp_path_factory):
    from web import create_app

    data = init_data_dir(tmp_path_factory.mktemp("caches") / "data")
    env = {"PACS_DICOMWEB_HEADER_CACHE_MB": str(BUDGET_MB), "PACS_DICOMWEB_OBJECT_CACHE_MB": str(BUDGET_MB)}
    appliance = build(load(data, env=env), with_web=False)
    app = create_app(appliance, {"TESTING": True})
    for n in range(40):
        buf = io.BytesIO()
        synth.make_instance(["CT", "US"][n % 2]).save_as(buf, enforce_file_format=True)
        appliance.ingestor.store_bytes(buf.getvalue(), Origin("test", "cache-bounds"))
    yield app.extensions["dicomweb"], list(instances(appliance.index).values())
    appliance.index.close()


def held_by(fill) -> int:
    """Bytes still allocated after ``fill()`` returns (what the cache keeps)."""
    gc.collect()
    tracemalloc.start()
    fill()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held


@pytest.mark.parametrize("which", ["headers", "objects"])
def test_cache_memory_stays_within_its_budget(dicomweb, which):
    ctx, ids = dicomweb
    cache = getattr(ctx, which)
    cache.clear()

    def fill():
        for object_id in ids:  # 40 objects, ~40 KB CT and ~230 KB US: well over 1 MiB parsed
            ctx.header(object_id) if which == "headers" else ctx.dataset(object_id)

    held = held_by(fill)
    assert cache.size <= BUDGET_MB << 20
    assert len(cache) < len(ids), "the test objects did not even fill the cache"
    # What the cache really keeps may exceed what it charges by little (estimates, dict slots).
    assert held < 1.3 * (BUDGET_MB << 20), f"{which}: {held / 2**20:.2f} MiB kept for a {BUDGET_MB} MiB budget"


def test_cached_header_does_not_pin_its_reader(dicomweb):
    ctx, ids = dicomweb
    ctx.headers.clear()
    ds, _has_pixels = ctx.header(ids[1])
    assert getattr(ds, "buffer", None) is None  # pydicom keeps its source (here a decrypted chunk) otherwise


def test_lru_cache_entry_bound():
    cache = LRUCache(1 << 20, size_of=len, max_entries=3)
    for n in range(5):
        cache.put(n, b"x")
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == b"x"


def test_sqlite_page_caches_share_one_process_wide_bound(tmp_path):
    """Each reading thread has its own connection and page cache; together they stay near 2 x [index] cache_mb."""
    import ctypes
    import os
    import threading

    import sqlcipher3._sqlite3 as sqlite_ext

    from appliance.index.db import open_index

    memory_used = ctypes.CDLL(sqlite_ext.__file__).sqlite3_memory_used
    memory_used.restype = ctypes.c_int64
    db = open_index(tmp_path / "index.db", os.urandom(32), cache_mb=1)
    db.execute_sql("CREATE TABLE scratch (x BLOB)")
    with db.atomic():
        for _ in range(40):
            db.execute_sql("INSERT INTO scratch SELECT randomblob(1000) FROM (SELECT 1 UNION ALL SELECT 2) "
                           "JOIN (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) "
                           "SELECT i FROM n)")  # 8,000 rows of 1 KB: ~8 MiB of pages
    baseline = memory_used()
    done, go = threading.Barrier(7), threading.Event()

    def reader():
        db.connect(reuse_if_open=True)
        db.execute_sql("SELECT sum(length(x)) FROM scratch").fetchone()  # every page through this thread's cache
        done.wait()
        go.wait()
        db.close()

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    done.wait()
    used = memory_used() - baseline
    go.set()
    for t in threads:
        t.join()
    db.close()
    # Without the limit each of the 6 caches holds its 1 MiB (cache_size): 6 MiB and more.
    assert used < 3 << 20, f"SQLite grew by {used / 2**20:.1f} MiB over 6 connections with cache_mb=1"
