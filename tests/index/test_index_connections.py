"""Index connections outlive their thread (appliance/index/connections.py): a thread that ends leaves its
open, idle connection for the next thread, never one inside a transaction, never more than a few, and
closing the index closes them. Both backends (PACS_TEST_INDEX=postgresql)."""
from __future__ import annotations

import threading

import pytest

from appliance.index.connections import IdleConnections


def in_thread(fn):
    """Run ``fn`` on a new thread that then ends; return its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def read_connection(db):
    db.execute_sql("SELECT 1").fetchone()
    return db.connection()


def test_an_ended_threads_connection_serves_the_next_thread(core):
    db = core.index.db
    first = in_thread(lambda: read_connection(db))
    assert in_thread(lambda: read_connection(db)) is first
    assert in_thread(lambda: db.execute_sql("SELECT count(*) FROM patient").fetchone()[0]) == 0


def test_concurrent_threads_never_share_a_connection(core):
    db = core.index.db
    in_thread(lambda: read_connection(db))  # one idle connection
    both, ready, done = [], threading.Barrier(2), threading.Event()

    def hold():
        both.append(read_connection(db))
        ready.wait()
        done.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    while len(both) < 2:
        threading.Event().wait(0.01)
    done.set()
    for t in threads:
        t.join()
    assert both[0] is not both[1]


def test_a_connection_left_inside_a_transaction_is_closed_not_kept(core):
    db = core.index.db

    def leave_open_transaction():
        db.begin()
        db.execute_sql("SELECT 1").fetchone()
        return db.connection()

    abandoned = in_thread(leave_open_transaction)
    assert in_thread(lambda: read_connection(db)) is not abandoned
    with pytest.raises(Exception):
        abandoned.execute("SELECT 1")  # closed


def test_a_thread_that_closed_its_connection_leaves_nothing(core):
    db = core.index.db

    def close_own():
        conn = read_connection(db)
        db.close()
        return conn

    closed = in_thread(close_own)
    assert in_thread(lambda: read_connection(db)) is not closed


def test_only_a_few_are_kept_and_closing_the_index_closes_them(core):
    db = core.index.db
    idle = db._state.idle
    go, ended = threading.Event(), []

    def hold():
        ended.append(read_connection(db))
        go.wait()

    threads = [threading.Thread(target=hold) for _ in range(idle.keep + 2)]
    for t in threads:
        t.start()
    while len(ended) < len(threads):
        threading.Event().wait(0.01)
    go.set()
    for t in threads:
        t.join()
    kept = [c for c in ended if is_open(c)]
    assert len(kept) == idle.keep
    core.index.close()
    assert not any(is_open(c) for c in ended)


def is_open(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - closed (either driver's error)
        return False
    return True


def test_the_pool_closes_what_it_cannot_use():
    closed = []

    class Conn(str):
        def close(self):
            closed.append(str(self))

    idle = IdleConnections(lambda conn: conn != "busy", keep=1)
    idle.give_back(Conn("busy"))
    idle.give_back(Conn("a"))
    idle.give_back(Conn("b"))
    assert closed == ["busy", "b"]
    assert idle.take() == "a" and idle.take() is None
