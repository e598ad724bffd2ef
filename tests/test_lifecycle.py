"""PeriodicTask: the one loop behind the background parts (forwarder, inbox, audit, worklist expiry)."""
from __future__ import annotations

import threading

from appliance.lifecycle import Named, PeriodicTask, Service

BOUND = 10  # seconds a test waits at most for the thread; never a timing being measured


def test_rounds_run_at_start_and_on_wake_and_stop_ends_the_wait():
    rounds = []
    ran = threading.Event()

    def round_():
        rounds.append(1)
        ran.set()

    task = PeriodicTask("test-task", round_, 3600)  # an hour: only start and wake() bring a round
    assert isinstance(task, Service)
    task.start()
    assert ran.wait(BOUND)
    ran.clear()
    task.wake()
    assert ran.wait(BOUND)
    task.stop()
    assert not task.running and len(rounds) == 2


def test_a_first_delay_holds_the_first_round_until_it_passes_or_a_wake():
    ran = threading.Event()
    task = PeriodicTask("delayed", ran.set, 3600, first_after=3600)
    task.start()
    assert not ran.wait(0.3)  # not at start
    task.wake()
    assert ran.wait(BOUND)
    task.stop()
    idle = PeriodicTask("delayed-then-stopped", ran.set, 3600, first_after=3600)
    idle.start()
    idle.stop()  # ends the first wait at once
    assert not idle.running


def test_a_failing_round_is_logged_and_retried(caplog):
    calls = []
    second = threading.Event()

    def round_():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first round breaks")
        second.set()

    task = PeriodicTask("flaky", round_, 3600, retry_seconds=0)
    task.start()
    try:
        assert second.wait(BOUND), "the loop died with its first round"
    finally:
        task.stop()
    assert "flaky failed" in caplog.text


def test_the_wait_can_come_from_the_round_and_stopping_is_visible_inside_it():
    seen = []
    stopped_inside = threading.Event()
    task = None

    def round_():
        seen.append(task.stopping)
        if len(seen) >= 3:
            stopped_inside.set()

    task = PeriodicTask("paced", round_, lambda: 0)  # a queue with work due now
    task.start()
    assert stopped_inside.wait(BOUND)
    task.stop()
    assert task.stopping and not any(seen[:3])


def test_named_gives_a_part_without_a_name_the_service_shape():
    class Part:
        started = stopped = False

        def start(self):
            self.started = True

        def stop(self):
            self.stopped = True

    part = Part()
    service = Named("some part", part)
    assert isinstance(service, Service) and service.name == "some part"
    service.start()
    service.stop()
    assert part.started and part.stopped
