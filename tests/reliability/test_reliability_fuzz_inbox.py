"""Mutated Part 10 files dropped into a running server's inbox, beside valid ones.

~50 damaged files of named kinds (truncations, flipped bytes in the file meta,
bad group and element lengths, huge declared lengths, a wrong or unknown
transfer syntax UID, a missing SOP Instance UID, garbage after "DICM"), made
with a fixed seed from synthetic instances, plus 10 valid files. The contract:
every valid file is imported; every damaged file is either imported (if the
damage left it readable) or sealed into the failed-import quarantine with a readable reason
beside it; nothing stays behind in the inbox; the process never dies, never
logs an unexpected exception, and its RSS stays within a bound.
"""
from __future__ import annotations

import io
import os
import random
import struct
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.filewriter import write_file_meta_info

import synth
from helpers import ADMIN_PASSWORD, Server, failed_imports, init_data_dir, wait_until

SEED = 20261123
FAST_INBOX = {"PACS_INBOX_STABLE_SECONDS": "0.2", "PACS_INBOX_POLL_SECONDS": "0.5", "PACS_INBOX_RETRY_SECONDS": "1"}
KINDS = ["CT", "MR_IMPLICIT", "MR_BIG_ENDIAN", "DEFLATED", "MR_RLE", "SC_JPEG"]
WRONG_SYNTAXES = ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1.99",
                  "1.2.3.4.5.6", "not a uid"]
RSS_BOUND_MB = 100  # growth allowed while importing ~60 small files (caches and thread pools warm up)


def part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def split(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + DICM + file meta, dataset) of a Part 10 file."""
    group_len = struct.unpack_from("<I", data, 132 + 8)[0]  # (0002,0000) UL, explicit little endian
    end = 132 + 12 + group_len
    return data[:end], data[end:]


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The same dataset bytes under a file meta that declares another transfer syntax."""
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = uid
    buf = io.BytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    return data[:132] + buf.getvalue() + split(data)[1]


def set_length(data: bytes, tag_bytes: bytes, length: bytes) -> bytes:
    """Overwrite the 4-byte length of the explicit-VR OB/OW/UN element whose tag bytes are given."""
    pos = data.find(tag_bytes, 132)
    assert pos > 0
    return data[:pos + 8] + length + data[pos + 12:]


def damaged_files(rng: random.Random) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    bases = {k: part10(synth.make_instance(k)) for k in KINDS}
    for n in range(8):  # truncated: in the meta, in the dataset, inside the pixel data
        kind = KINDS[n % len(KINDS)]
        data = bases[kind]
        meta_end = len(split(data)[0])
        cut = [rng.randrange(4, 132), rng.randrange(132, meta_end), rng.randrange(meta_end, len(data))][n % 3]
        out[f"truncated-{n}-{kind}.dcm"] = data[:cut]
    for n in range(8):  # flipped bytes in the file meta (after the preamble)
        kind = KINDS[n % len(KINDS)]
        data = bytearray(bases[kind])
        meta_end = len(split(bytes(data))[0])
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(128, meta_end)] ^= 1 << rng.randrange(8)
        out[f"meta-flip-{n}-{kind}.dcm"] = bytes(data)
    for n, value in enumerate([0, 2, 0xFFFF, 0xFFFFFFF0]):  # a lying (0002,0000) group length
        data = bytearray(bases["CT"])
        struct.pack_into("<I", data, 132 + 8, value)
        out[f"group-length-{n}.dcm"] = bytes(data)
    for n, length in enumerate([b"\xf0\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x00\x00\x00\x80"]):  # huge Pixel Data
        out[f"huge-pixel-length-{n}.dcm"] = set_length(bases["CT"], b"\xe0\x7f\x10\x00OW", length)
    for n in range(3):  # a huge or odd length on a random element of the dataset
        data = bytearray(bases["CT"])
        meta_end = len(split(bytes(data))[0])
        pos = rng.randrange(meta_end, meta_end + 600)
        data[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xf0\xff\xff\x0f", b"\x01\x00\x00\x00"])
        out[f"bad-length-{n}.dcm"] = bytes(data)
    for n, uid in enumerate(WRONG_SYNTAXES):  # explicit little endian data under another transfer syntax
        out[f"wrong-ts-{n}.dcm"] = with_transfer_syntax(bases["CT"], uid)
    ds = synth.make_instance("CT")  # no SOP Instance UID and no file meta at all
    del ds.SOPInstanceUID
    out["no-sop-uid-0.dcm"] = b"\0" * 128 + b"DICM" + split(part10_unchecked(ds))[1]
    ds = synth.make_instance("MR_IMPLICIT")
    ds.SOPInstanceUID = ""
    ds.file_meta.MediaStorageSOPInstanceUID = ""
    ds.file_meta.ImplementationClassUID = "1.2.3"  # so the writer does not refill anything
    out["no-sop-uid-1.dcm"] = part10_unchecked(ds)
    ds = synth.make_instance("CT")
    del ds.SOPInstanceUID
    out["no-sop-uid-2.dcm"] = part10_unchecked(ds)  # the meta still names one; the dataset does not
    for n in range(6):  # random flips anywhere after the preamble
        kind = KINDS[n % len(KINDS)]
        data = bytearray(bases[kind])
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(128, len(data))] ^= 1 << rng.randrange(8)
        out[f"flip-{n}-{kind}.dcm"] = bytes(data)
    out["garbage-after-dicm.dcm"] = b"\0" * 128 + b"DICM" + rng.randbytes(4000)
    out["preamble-only.dcm"] = b"\0" * 128 + b"DICM"
    out["empty.dcm"] = b""
    out["text.dcm"] = b"this is not an image\n" * 50
    return out


def part10_unchecked(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_mutated_files_in_the_inbox(tmp_path):
    rng = random.Random(SEED)
    damaged = damaged_files(rng)
    assert len(damaged) >= 45
    valid = {f"valid-{n}.dcm": synth.make_instance(KINDS[n % len(KINDS)]) for n in range(10)}
    data = init_data_dir(tmp_path / "data")
    srv = Server(data, env=FAST_INBOX).start()
    try:
        inbox = data / "inbox"
        staging = tmp_path / "staging"
        staging.mkdir()
        files = {**{k: part10(ds) for k, ds in valid.items()}, **damaged}
        names = list(files)
        rng.shuffle(names)  # valid files among the damaged ones
        rss_before = rss_mb(srv.proc.pid)
        for name in names:
            (staging / name).write_bytes(files[name])
            os.rename(staging / name, inbox / name)  # appears whole
        wait_until(lambda: not any((inbox / n).exists() for n in names) or srv.proc.poll() is not None, 120,
                   what="the inbox to empty")
        assert srv.proc.poll() is None, f"the server died:\n{srv.log()[-3000:]}"
        rss_after = rss_mb(srv.proc.pid)

        failed, imported = {}, []
        quarantined = failed_imports(srv.data_dir)
        for name in damaged:
            if name in quarantined:
                reason, content = quarantined[name]
                assert reason and "Traceback" not in reason, reason
                assert content == files[name]  # sealed as it was
                failed[name] = reason
            else:
                imported.append(name)
        print(f"inbox fuzz: {len(damaged)} damaged files: {len(failed)} to failed/, {len(imported)} imported "
              f"({', '.join(sorted(imported))}); 10 valid imported; RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
        for name, reason in sorted(failed.items()):
            print(f"  {name}: {reason[:150]}")
        for name in valid:
            assert name not in quarantined, quarantined[name][0]
        http = requests.Session()
        http.auth = ("admin", ADMIN_PASSWORD)
        for name, ds in valid.items():
            r = http.get(f"{srv.url}/dicomweb/instances", params={"SOPInstanceUID": ds.SOPInstanceUID},
                         headers={"Accept": "application/dicom+json"}, timeout=30)
            assert r.status_code == 200 and len(r.json()) == 1, (name, r.status_code)
        for name in ("no-sop-uid-0.dcm", "no-sop-uid-1.dcm", "no-sop-uid-2.dcm", "empty.dcm", "text.dcm",
                     "preamble-only.dcm", "garbage-after-dicm.dcm", "huge-pixel-length-0.dcm",
                     "huge-pixel-length-1.dcm", "huge-pixel-length-2.dcm"):
            assert name in failed, f"{name} was imported"
        log = srv.log()
        assert "failed unexpectedly" not in log and "Traceback" not in log, log[-3000:]
        assert rss_after - rss_before < RSS_BOUND_MB, (rss_before, rss_after)
        assert requests.get(f"{srv.url}/healthz", timeout=10).status_code == 200
    finally:
        srv.kill()


@pytest.mark.parametrize("uid", ["1.2.3.4.5.6", "not a uid", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"])
def test_unknown_transfer_syntax_is_refused(tmp_path, uid):
    from appliance.archive import Archive, KeyStore
    from appliance.errors import InvalidObject
    from appliance.events import Events
    from appliance.index import Index
    from appliance.ingest import Ingestor, Origin

    keyring, _ = KeyStore(tmp_path / "keys").create()
    archive = Archive(tmp_path / "archive", keyring)
    archive.create_dirs()
    index = Index.open(tmp_path / "index.db", keyring.index_key)
    try:
        ingestor = Ingestor(archive, index, Events(), reserve_bytes=0, on_conflict="replace")
        with pytest.raises(InvalidObject, match="transfer syntax"):
            ingestor.store_bytes(with_transfer_syntax(part10(synth.make_instance("CT")), uid), Origin("test", "fuzz"))
    finally:
        index.close()
