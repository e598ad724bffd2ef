"""A PostgreSQL server for the scale benchmark: tests/pg_cluster.py's cluster (Debian's postgresql as the
postgres user, listening on 127.0.0.1 only, trust authentication), kept in ``<work>/pg`` so that a box built
once can be measured again, with fsync on (a real index server's cost), and one database per box.

    with pgbox.running(work) as cluster:
        url = pgbox.database_url(cluster, box_dir)
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pg_cluster  # noqa: E402


@contextlib.contextmanager
def running(work: Path):
    cluster = pg_cluster.Cluster(work / "pg", fsync=True).start()
    try:
        yield cluster
    finally:
        cluster.stop("fast")  # a clean shutdown: the next start needs no recovery


def database_url(cluster: pg_cluster.Cluster, box: Path, create: bool = False) -> str:
    """The URL of ``box``'s database (named after its directory), made first when ``create``."""
    import psycopg

    name = box.name.replace("-", "_")
    if create:
        with psycopg.connect(cluster.base_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.base_url.rsplit("/", 1)[0] + "/" + name


def is_pg_box(box: Path) -> bool:
    return box.name.endswith("-pg")
