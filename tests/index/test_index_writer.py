"""The single writer (appliance/index/writer.py): a submitter finding it idle writes itself, on the writer's
connection; under contention the writer thread batches what queued into one commit. Both backends
(PACS_TEST_INDEX=postgresql). No timing: each ordering is forced with events and the writer's lock."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

WRITER_THREAD = "index-writer"


@pytest.fixture
def setup(core):
    index = core.index
    index.writer.run(lambda: index.db.execute_sql('CREATE TABLE "scratch" ("k" TEXT NOT NULL)'))
    index.start()
    commits = []
    real_commit = index.db.commit

    def counting_commit():
        commits.append(threading.current_thread().name)
        return real_commit()

    index.db.commit = counting_commit
    return index, commits


def put(index, key: str, seen: list | None = None):
    """A write of ``key`` that notes which thread ran it, on which connection, in which transaction."""
    def fn():
        index.db.execute_sql('INSERT INTO "scratch" ("k") VALUES (?)', (key,))
        if seen is not None:
            seen.append((key, threading.current_thread().name, id(index.db.connection()),
                         id(index.db._state.transactions[0])))
        return key
    return fn


def keys(index) -> list[str]:
    return [r[0] for r in index.db.execute_sql('SELECT "k" FROM "scratch" ORDER BY "k"').fetchall()]


def in_thread(fn):
    t = threading.Thread(target=fn)
    t.start()
    return t


@contextmanager
def writer_busy(index, first=None):
    """A submitter holds the writer's lock inside its transaction (running ``first`` there, if given)
    for the block; submissions made in the block queue behind it."""
    inside, release = threading.Event(), threading.Event()

    def hold():
        if first is not None:
            first()
        inside.set()
        release.wait()

    holder = in_thread(lambda: index.writer.run(hold))
    inside.wait()
    try:
        yield
    finally:
        release.set()
        holder.join()


def test_idle_writer_runs_the_submitters_write_on_the_writers_connection(setup):
    index, commits = setup
    seen = []
    future = index.writer.submit(put(index, "a", seen))
    assert future.done() and future.result() == "a"  # committed before submit returned
    assert keys(index) == ["a"]  # visible to another connection (this thread's own)
    t = in_thread(lambda: index.writer.run(put(index, "b", seen)))
    t.join()
    (_, thread_a, conn_a, _), (_, thread_b, conn_b, _) = seen
    assert thread_a == threading.current_thread().name and thread_b != WRITER_THREAD
    assert conn_a == conn_b != id(index.db.connection())  # the writer's one connection, not the caller's
    assert commits == [thread_a, thread_b]
    assert not index.db.in_transaction()  # the caller's own state is untouched


def test_contention_queues_and_the_writer_thread_commits_once(setup):
    index, commits = setup
    seen = []
    with writer_busy(index, first=put(index, "a", seen)):
        futures = [index.writer.submit(put(index, k, seen)) for k in "bcd"]
        assert not any(f.done() for f in futures)  # queued, not run here
    assert [f.result() for f in futures] == ["b", "c", "d"]
    assert keys(index) == ["a", "b", "c", "d"]
    by_key = {k: (thread, conn, txn) for k, thread, conn, txn in seen}
    assert {by_key[k][0] for k in "bcd"} == {WRITER_THREAD}
    assert len({by_key[k][1] for k in "abcd"}) == 1  # one connection for every write
    assert len({by_key[k][2] for k in "bcd"}) == 1  # one transaction for the three queued
    assert commits[1:] == [WRITER_THREAD]  # one commit for them (group commit)


def test_a_failing_function_rolls_back_only_itself(setup):
    index, _ = setup

    def boom():
        index.db.execute_sql('INSERT INTO "scratch" ("k") VALUES (?)', ("x",))
        raise ValueError("refused")

    with pytest.raises(ValueError):  # inline
        index.writer.run(boom)

    with writer_busy(index):
        futures = [index.writer.submit(put(index, "b")), index.writer.submit(boom),
                   index.writer.submit(put(index, "d"))]
    assert futures[0].result() == "b" and futures[2].result() == "d"
    with pytest.raises(ValueError, match="refused"):
        futures[1].result()
    assert keys(index) == ["b", "d"]
    assert index.writer.run(put(index, "e")) == "e"  # the writer's connection is usable after each
    assert keys(index) == ["b", "d", "e"]


def test_a_failed_commit_fails_every_function_in_it(setup):
    index, commits = setup
    counting = index.db.commit
    fail_in = set()  # the names of the threads whose next commit fails

    def commit():
        name = threading.current_thread().name
        if name in fail_in:
            fail_in.discard(name)
            raise OSError(28, "No space left on device")
        return counting()

    index.db.commit = commit
    fail_in.add(threading.current_thread().name)
    with pytest.raises(OSError):  # inline
        index.writer.run(put(index, "a"))
    assert keys(index) == []

    with writer_busy(index):
        futures = [index.writer.submit(put(index, k)) for k in "bc"]
        fail_in.add(WRITER_THREAD)  # the batch's commit
    for f in futures:
        with pytest.raises(OSError):
            f.result()
    assert keys(index) == []
    assert index.writer.run(put(index, "d")) == "d"  # the writer's connection is usable after
    assert keys(index) == ["d"]


def test_a_caller_inside_its_own_transaction_queues(setup):
    index, _ = setup
    seen = []
    with index.db.atomic():
        assert index.writer.run(put(index, "a", seen)) == "a"
        assert index.db.in_transaction()  # still the caller's own
    assert seen[0][1] == WRITER_THREAD


def test_post_always_queues_and_a_nested_run_is_refused(setup):
    index, _ = setup
    seen = []
    index.writer.post(put(index, "a", seen)).result()
    assert seen[0][1] == WRITER_THREAD

    def nested():
        return index.writer.run(put(index, "b"))

    with pytest.raises(RuntimeError, match="inside a write"):
        index.writer.run(nested)
    assert keys(index) == ["a"]


def test_stop_closes_the_writers_connection(setup):
    index, _ = setup
    index.writer.run(put(index, "a"))
    assert not index.writer._conn.closed
    index.writer.stop()
    assert index.writer._conn.closed
    assert index.writer.run(put(index, "b")) == "b"  # not serving: inline on the caller's connection


def test_a_read_uses_the_writers_connection_only_when_it_is_free(setup):
    index, _ = setup
    writers = []
    index.writer.run(lambda: writers.append(id(index.db.connection())))
    conn = lambda: id(index.db.connection())  # noqa: E731
    assert index.writer.read(conn) == writers[0]  # idle: the writer's (warm) connection
    with writer_busy(index):
        assert index.writer.read(conn) not in (writers[0], None)  # busy: the caller's own, without waiting
    assert index.writer.run(lambda: index.writer.read(conn)) == writers[0]  # inside a write: that write's


def test_borrowing_swaps_every_field_of_peewees_connection_state():
    """connections.py copies peewee's per-thread fields by name: a field a new peewee adds must be listed."""
    from peewee import _ConnectionState

    from appliance.index.connections import _FIELDS

    assert sorted(vars(_ConnectionState())) == sorted(_FIELDS)
