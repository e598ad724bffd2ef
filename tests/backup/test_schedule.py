"""The scheduler's decisions: window, once per window, retries with back-off, run now."""
from __future__ import annotations

import datetime

from appliance.backup.schedule import Scheduler, parse_window, window_start
from appliance.backup.sync import SyncResult

TZ = datetime.timezone.utc


def at(h, m=0, day=10):
    return datetime.datetime(2026, 11, day, h, m, tzinfo=TZ)


def test_window_start_including_across_midnight():
    day = parse_window("01:00-05:00")
    assert window_start(at(0, 59), day) is None
    assert window_start(at(3), day) == at(1)
    assert window_start(at(5), day) is None
    night = parse_window("22:00-02:00")
    assert window_start(at(23), night) == at(22)
    assert window_start(at(1), night) == at(22, day=9)
    assert window_start(at(12), night) is None


class FakeService:
    configured = True
    scheduler = None

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def run(self, trigger, actor):
        self.calls.append((trigger, actor))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return SyncResult(result=outcome)


def test_runs_once_per_window_and_retries_with_backoff(folder_box, monkeypatch):
    now = [at(0)]
    service = FakeService([RuntimeError("target down"), "failed", "success"])
    sched = Scheduler(service, "01:00-05:00", retries=3, retry_seconds=60, clock=lambda: now[0])
    succeeded = []
    monkeypatch.setattr(sched, "_succeeded_since", lambda start: bool(succeeded))

    sched.step()
    assert service.calls == []  # outside the window
    now[0] = at(1, 0)
    sched.step()
    assert service.calls == [("schedule", "system")]  # fails: retry in 60 s
    now[0] = at(1, 0) + datetime.timedelta(seconds=30)
    sched.step()
    assert len(service.calls) == 1  # not yet
    now[0] = at(1, 1)
    sched.step()
    assert service.calls[-1] == ("retry", "system")  # fails again: next in 120 s
    now[0] = at(1, 2)
    sched.step()
    assert len(service.calls) == 2
    now[0] = at(1, 3, ) + datetime.timedelta(seconds=1)
    sched.step()
    assert len(service.calls) == 3  # succeeds
    succeeded.append(True)
    now[0] = at(4)
    sched.step()
    assert len(service.calls) == 3  # done for this window


def test_run_now_goes_first_even_outside_the_window(folder_box):
    service = FakeService(["success"])
    sched = Scheduler(service, "01:00-05:00", retries=1, retry_seconds=1, clock=lambda: at(12))
    assert service.scheduler is sched
    sched.run_now("alice")
    sched.step()
    assert service.calls == [("manual", "alice")]


def test_scheduler_thread_runs_a_real_backup_on_request(folder_box):
    from helpers import wait_until

    box = folder_box
    box.add_study(2, patient_id="NOW1")
    sched = Scheduler(box.app.backup, "01:00-01:01", retries=0, retry_seconds=1, tick=0.2)
    box.app.index.start()
    sched.start()
    try:
        box.app.backup.run_now("admin")
        wait_until(lambda: (box.app.backup.status()["last_run"] or {}).get("result") == "success", 20,
                   what="the requested backup")
    finally:
        sched.stop()
    assert all(box.app.backup.is_offsite(oid) for oid in box.object_ids())
