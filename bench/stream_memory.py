#!/usr/bin/env python3
"""Memory of a streamed search on a big index: the first records of a C-FIND-shaped ``iter_search``
that matches every row, in a fresh process, with its peak RSS and time to the first record.

Run it with the tree to measure first on PYTHONPATH (a `git worktree` of an older commit for "before"):

    PYTHONPATH=$PWD .venv/bin/python bench/stream_memory.py URL [--level IMAGE] [--take 1000]
    # URL: a PostgreSQL index (bench/pgbox.py's database of a scale_build.py --pg box)
"""
from __future__ import annotations

import argparse
import itertools
import resource
import time
from pathlib import Path

from appliance.index import Index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--level", default="IMAGE")
    p.add_argument("--take", type=int, default=1000, help="records read before the search is closed")
    a = p.parse_args()
    index = Index.open(Path("/nonexistent"), b"\0" * 32, url=a.url)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    records = index.iter_search(a.level, {})
    first = next(records)
    first_ms = (time.perf_counter() - started) * 1000
    taken = 1 + sum(1 for _ in itertools.islice(records, a.take - 1))
    records.close()
    total_ms = (time.perf_counter() - started) * 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.level} universal: first record {first_ms:.0f} ms, {taken} records {total_ms:.0f} ms; peak RSS "
          f"{peak:.0f} MB ({peak - before:+.0f} MB for the search); first _id {first['_id']}")
    index.db.close()


if __name__ == "__main__":
    main()
