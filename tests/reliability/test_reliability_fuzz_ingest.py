"""Hostile Part 10 files through the one ingest path, in-process and over the network.

Hypothesis mutates synthetic files (flip, truncate, insert, overwrite lengths
with 0/0xFFFFFFFF) with a fixed seed (derandomized, so CI runs the same cases).
The contract: ``Ingestor.store_bytes`` either stores the object (and it reads
back byte-identical) or raises an ApplianceError; never another exception type,
never a hang; nothing half-written is left in the archive.
"""
from __future__ import annotations

import io
import logging
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import synth
from appliance.archive import Archive, KeyStore
from appliance.errors import ApplianceError
from appliance.events import Events
from appliance.index import Index
from appliance.ingest import Ingestor, Origin

KINDS = ["CT", "MR_IMPLICIT", "MR_BIG_ENDIAN", "DEFLATED", "MR_RLE", "SC_JPEG", "US_CINE_JPEG"]
EXAMPLES = 400
COUNTS = {"stored": 0, "refused": 0}


def part10(kind: str) -> bytes:
    buf = io.BytesIO()
    synth.make_instance(kind).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


BASES = {k: part10(k) for k in KINDS}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(BASES[draw(st.sampled_from(KINDS))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "truncate", "insert", "length", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:  # a value length or tag word replaced by an extreme
            data[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xfe\xff\x00\xe0",
                                                      b"\xff\xff\x00\x00", b"SQ\0\0"]))
    return bytes(data)


@pytest.fixture(scope="module")
def ingestor(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    keyring, _ = KeyStore(root / "keys").create()
    archive = Archive(root / "archive", keyring, chunk_size=4096)
    archive.create_dirs()
    index = Index.open(root / "index.db", keyring.index_key)
    yield Ingestor(archive, index, Events(), reserve_bytes=0, on_conflict="replace")
    index.close()


@pytest.mark.timeout(300)
def test_mutated_part10_is_stored_or_refused(ingestor, caplog):
    caplog.set_level(logging.CRITICAL, logger="appliance")  # refusals are logged (thousands of lines); restored after

    @seed(20261123)
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=5000, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def case(data: bytes):
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = ingestor.store_bytes(data, Origin("test", "fuzz"))
            except ApplianceError:
                COUNTS["refused"] += 1
                return
        COUNTS["stored"] += 1
        assert time.monotonic() - started < 5
        row = ingestor.index.studies.find_instance(result.sop_uid)
        assert ingestor.archive.read(row.object_id)  # decrypts, tags checked

    case()
    # Nothing half-written: the archive holds exactly what the index names (replaced objects aside).
    assert set(ingestor.archive.list_ids()) == {o.object_id for o in ingestor.index.objects.named()}
    assert not any(ingestor.archive._tmp_dir.iterdir())
    print(f"fuzz ingest: {EXAMPLES} mutated files, {COUNTS}")
