"""docs/CONFORMANCE.md is what the code generates, and what a running node negotiates is what it says."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1, JPEGLSLossless)
from pynetdicom import AE, build_context, build_role
from pynetdicom.sop_class import CTImageStorage, Verification

from appliance.dicom import conformance

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFORMANCE.md"
NOT_SERVED = "1.2.840.10008.5.1.1.9"  # Basic Grayscale Print Management Meta: a non-storage class we do not serve


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def scp_uids(text: str) -> list[str]:
    return re.findall(r"^\| [^|]+ \| [^|]+ \| `([0-9.]+)` \|", section(text, "## 2. SOP classes as SCP"), re.M)


def test_committed_statement_is_the_generated_one():
    assert DOC.read_text(encoding="utf-8") == conformance.render(), (
        "docs/CONFORMANCE.md is stale: run `pacs-appliance conformance -o docs/CONFORMANCE.md`")


def test_every_sop_class_the_statement_lists_is_accepted(shared_server):
    uids = scp_uids(DOC.read_text(encoding="utf-8"))
    assert Verification in uids and CTImageStorage in uids and len(uids) > 100
    for start in range(0, len(uids), 120):  # at most 128 contexts per association
        ae = AE("CONFTEST")
        batch = uids[start:start + 120] + ([NOT_SERVED] if start == 0 else [])
        for uid in batch:
            ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", shared_server.dicom_port, ae_title="PACSBOX")
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        assoc.release()
        assert set(uids[start:start + 120]) <= accepted, set(uids[start:start + 120]) - accepted
        if start == 0:
            assert NOT_SERVED in rejected  # and what it does not list is refused


def test_transfer_syntax_rules_as_negotiated(shared_server):
    text = DOC.read_text(encoding="utf-8")
    assert "accepts the first transfer syntax the requestor proposes" in text
    preference = re.findall(r"^- .+ `([0-9.]+)`$", section(text, "### 4.1 Accepted as SCP"), re.M)
    ae = AE("CONFTEST")
    ae.add_requested_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])  # non-storage
    ae.add_requested_context(CTImageStorage, [JPEGLSLossless, ExplicitVRLittleEndian])  # storage, as SCU
    contexts = [build_context("1.2.840.10008.5.1.4.1.1.4", [JPEGLosslessSV1, ExplicitVRLittleEndian]),  # MR, C-GET
                *ae.requested_contexts]
    assoc = ae.associate("127.0.0.1", shared_server.dicom_port, ae_title="PACSBOX", contexts=contexts,
                         ext_neg=[build_role("1.2.840.10008.5.1.4.1.1.4", scp_role=True)])
    assert assoc.is_established
    got = {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    assoc.release()
    offered = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert got[Verification] == next(ts for ts in preference if ts in offered)  # the statement's order
    assert got[CTImageStorage] == JPEGLSLossless  # storage: the requestor's first
    assert got["1.2.840.10008.5.1.4.1.1.4"] == ExplicitVRLittleEndian  # C-GET: a syntax the box can always fill
    # dcmtk agrees: echoscu's context is accepted
    done = subprocess.run(["echoscu", "-aec", "PACSBOX", "127.0.0.1", str(shared_server.dicom_port)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_cli_prints_the_statement(tmp_path):
    from helpers import run_cli

    out = tmp_path / "c.md"
    run_cli("conformance", "-o", out)
    assert out.read_text(encoding="utf-8") == conformance.render()
