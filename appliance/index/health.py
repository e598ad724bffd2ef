"""Is the index file whole? SQLite's own checks, run on a dedicated connection (issue 15).

``quick_check`` reads every page and checks the b-trees' structure (about a second per
100 MB); ``integrity_check`` also checks that every index matches its table. Both report
problems as lines naming the table or page; an empty list means the file is sound.
"""
from __future__ import annotations

from pathlib import Path

from sqlcipher3 import dbapi2 as sqlcipher

MAX_LINES = 20


def check(path: Path, key: bytes, full: bool = False) -> list[str]:
    """What is wrong with the index file at ``path`` (empty when it is sound, or absent: see ``exists``)."""
    path = Path(path)
    if not path.exists():
        return [f"{path} does not exist"]
    try:
        conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlcipher.Error as exc:
        return [f"{path} cannot be opened ({exc})"]
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("PRAGMA busy_timeout = 30000")
        pragma = "integrity_check" if full else "quick_check"
        rows = conn.execute(f"PRAGMA {pragma}({MAX_LINES})").fetchall()
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        return [f"{path.name}: {p}" for p in problems]
    except sqlcipher.DatabaseError as exc:
        text = str(exc)
        if "not a database" in text:
            return [f"{path.name} cannot be read with this box's index key: damaged (or another box's file)"]
        return [f"{path.name}: {text}"]
    finally:
        conn.close()
