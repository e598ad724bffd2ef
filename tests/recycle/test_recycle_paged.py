"""The recycler reads the index a page of studies at a time and holds only the studies it needs (issue 19)."""
from __future__ import annotations

from test_recycle import fill, squeeze

import appliance.index.recycling as recycling_mod
import appliance.services.recycle as recycle_mod


def spy_pages(box, monkeypatch) -> list[int]:
    """Record how many study ids each page of the recycler's pass asked totals for."""
    asked = []
    repo = box.app.index.recycling
    totals_of = repo._totals_of

    def recording(ids, target):
        asked.append(len(ids))
        return totals_of(ids, target)

    monkeypatch.setattr(repo, "_totals_of", recording)
    return asked


def test_study_pages_is_a_lazy_keyset_pass_of_bounded_pages(box, monkeypatch):
    for name in "ABCDE":
        box.add_study(name)
    asked = spy_pages(box, monkeypatch)
    pages = box.app.index.recycling.study_pages(None, page=2)
    first = next(pages)
    assert asked == [2] and len(first) == 2  # nothing read beyond the first page yet
    rest = list(pages)
    assert asked == [2, 2, 1] and [len(p) for p in rest] == [2, 1]
    assert [t.study_uid for p in [first, *rest] for t in p] == [box.studies[n] for n in "ABCDE"]
    assert [t.objects for p in [first, *rest] for t in p] == [2] * 5


def test_small_pages_and_passes_choose_exactly_as_one_sorted_list(box, monkeypatch):
    """Pages of 2 studies and at most 1 study chosen per pass: the same studies recycled, in the same order,
    the same kept and counted, as the one-pass test in test_recycle.py."""
    fill(box)
    sizes = {n: box.sealed_size(n) for n in "ABCDE"}
    squeeze(box, sizes["A"] + sizes["B"])
    monkeypatch.setattr(recycling_mod, "PAGE", 2)
    monkeypatch.setattr(recycle_mod, "CHOSEN_MAX", 1)
    asked = spy_pages(box, monkeypatch)

    dry = box.app.recycler.run(trigger="test", dry_run=True)
    assert [c.study_uid for c in dry.recycled] == [box.studies["A"], box.studies["B"]]
    listed, total, recent = box.app.recycler.plan(limit=3)
    assert [c.study_uid for c in listed] == [box.studies[n] for n in "EAD"] and (total, recent) == (5, 0)
    asked.clear()

    report = box.app.recycler.run(trigger="test")

    assert [c.study_uid for c in report.recycled] == [box.studies["A"], box.studies["B"]]
    assert report.bytes_freed == sizes["A"] + sizes["B"] and "target met" in report.result
    assert {c.study_uid: c.reason for c in report.blocked} == {
        box.studies["E"]: "2 of 2 objects not yet offsite", box.studies["D"]: "1 of 3 objects not yet offsite"}
    assert report.blocked_count == 2 and report.eligible_left == 1 and report.recent == 0
    # Two passes (one study chosen each) over pages of at most 2 studies: 5 studies, then 4 once A is gone.
    assert asked == [2, 2, 1, 2, 2]


def test_recycled_ids_are_looked_up_not_loaded(box):
    """A disaster restore asks which manifest objects are recycled one id at a time (index.recycling.object_ids)."""
    fill(box)
    ids = {n: box.object_ids(n) for n in "ABC"}
    squeeze(box, box.sealed_size("A"))
    assert [c.study_uid for c in box.app.recycler.run().recycled] == [box.studies["A"]]
    recycled = box.app.index.recycling.object_ids()
    assert not hasattr(recycled, "__iter__") and len(recycled) == 2
    assert all(o in recycled for o in ids["A"]) and not any(o in recycled for o in ids["B"] + ids["C"])
