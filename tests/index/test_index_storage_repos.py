"""The storage side's repositories (index.objects, index.backup, index.recycling) use their own Index's database,
and read the archive-object lists in bounded pages."""
from __future__ import annotations

import logging

import synth

from appliance.index import objects as objects_mod
from appliance.index.reconcile import reconcile
from appliance.services.verify import verify_all


def test_each_index_sees_only_its_own_objects_and_backup_state(core_factory):
    a, b = core_factory(), core_factory()  # b opened last: a global bind would point at b's file
    in_a = a.store(synth.make_instance("CT", patient_id="SEAM-A"))
    in_b = b.store(synth.make_instance("CT", patient_id="SEAM-B"))

    assert [o.object_id for o in a.index.objects.named()] == [in_a.object_id]
    assert [o.object_id for o in b.index.objects.named()] == [in_b.object_id]
    assert a.index.objects.count() == 1 and [r.label for r in a.index.objects.rows()] == [in_a.sop_uid]
    assert reconcile(a.archive, a.index).clean and reconcile(b.archive, b.index).clean

    a.index.backup.record_uploaded("file:///nas", [(in_a.object_id, 123)])
    a.index.backup.stamp_listed("file:///nas", synth_now())
    assert a.index.backup.is_offsite("file:///nas", in_a.object_id)
    assert b.index.backup.count("file:///nas") == 0 and not b.index.backup.is_offsite("file:///nas", in_a.object_id)
    run = a.index.backup.start_run("file:///nas", "manual")
    a.index.backup.finish_run(run, result="success", objects=1, bytes=123, manifest="m", error="")
    assert a.index.backup.last_run().result == "success" and b.index.backup.last_run() is None
    assert a.index.recycling.totals() == (0, 0) and not b.index.recycling.is_recycled(in_a.object_id)


def synth_now():
    from appliance.index import utcnow

    return utcnow()


def test_reconcile_merges_page_by_page(core, monkeypatch, caplog):
    """Orphans and missing objects interleaved across several index pages come out exactly as before."""
    monkeypatch.setattr(objects_mod, "PAGE", 2)
    stored = [core.store(synth.make_instance("CT", patient_id="SEAM-P", instance_number=i)) for i in range(5)]
    ds = synth.make_instance("CT", patient_id="SEAM-P", instance_number=9)
    core.store(ds)
    ds.InstanceNumber = 10
    core.store(ds)  # a replaced object: named by the index too
    orphans = sorted(core.archive.put_bytes(f"orphan {i}".encode()).object_id for i in range(3))
    gone = stored[2]
    core.archive._path(gone.object_id).unlink()  # a disk fault
    with caplog.at_level(logging.WARNING):
        report = reconcile(core.archive, core.index)
    assert report.orphans == orphans
    assert [(m.sop_uid, m.object_id) for m in report.missing] == [(gone.sop_uid, gone.object_id)]
    assert report.indexed == 7 and report.archived == 7 - 1 + 3


def test_verify_pages_and_samples_in_sql(core, monkeypatch):
    monkeypatch.setattr(objects_mod, "PAGE", 2)
    stored = [core.store(synth.make_instance("CT", patient_id="SEAM-V", instance_number=i)) for i in range(5)]
    full = verify_all(core.archive, core.index)
    assert full.ok and full.checked == 5
    assert [r.label for r in core.index.objects.rows()] == [s.sop_uid for s in stored]  # every row, once
    sample = core.index.objects.sample(3)
    assert len(sample) == 3 and len({r.object_id for r in sample}) == 3
    assert {r.label for r in core.index.objects.sample(50)} == {s.sop_uid for s in stored}
    assert verify_all(core.archive, core.index, sample=2).checked == 2


def test_sampler_probes_reach_every_row_of_both_tables(core, monkeypatch):
    """Random keyset probes, not a scan: with more rows than the sample reads whole, repeated samples still
    reach the first and the last ids of both tables, each sample without repeats."""
    import random

    monkeypatch.setattr(objects_mod, "SMALL_SAMPLE_FACTOR", 1)  # 13 rows > 1 x 3: the probing path
    stored = [core.store(synth.make_instance("CT", patient_id="SEAM-S", instance_number=i)) for i in range(12)]
    ds = synth.make_instance("CT", patient_id="SEAM-S", instance_number=20)
    core.store(ds)
    ds.InstanceNumber = 21
    core.store(ds)  # the first copy becomes a replaced object
    rng = random.Random(19)
    seen = set()
    for _ in range(60):
        sample = core.index.objects.sample(3, rng)
        assert 1 <= len(sample) <= 3 and len({r.object_id for r in sample}) == len(sample)
        seen |= {r.label for r in sample}
    assert {s.sop_uid for s in stored} <= seen and f"(replaced) {ds.SOPInstanceUID}" in seen
    monkeypatch.setattr(objects_mod, "SMALL_SAMPLE_FACTOR", 4)  # 14 rows <= 4 x 50: every row, once
    assert len(core.index.objects.sample(50)) == 14
