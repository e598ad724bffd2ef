"""One recycler pass (``storage recycle --dry-run``'s run) over a synthetic index: time and peak Python heap.

    python bench/recycle_plan_mem.py DIR build STUDIES   # a new box in DIR, STUDIES x 10 instances (synthindex)
    python bench/recycle_plan_mem.py DIR measure         # one dry-run pass, with the tree on PYTHONPATH

Every instance is made 100 days old and no backup target is configured, so every study is a candidate kept
back ("no backup target is configured"): the pass reads and judges the whole index. Compare trees by running
``measure`` with PYTHONPATH set to each worktree, interleaved.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("PACS_STORAGE_RESERVE_MB", "16")

from appliance.app import build  # noqa: E402
from appliance.cli import load_config  # noqa: E402


def main() -> None:
    data, what = Path(sys.argv[1]), sys.argv[2]
    if what == "build":
        import synthindex

        data.parent.mkdir(parents=True, exist_ok=True)
        pw = data.parent / "admin.pw"
        pw.write_text("bench-admin-password")
        subprocess.run([sys.executable, "-m", "appliance", "init", "--data", str(data), "--admin-password-file",
                        str(pw)], check=True, capture_output=True)
        app = build(load_config(data), with_web=False)
        print(synthindex.build(app.index.db, studies=int(sys.argv[3])))
        app.index.db.execute_sql("UPDATE instance SET received_at = datetime('now', '-100 days')")
        app.index.close()
        return
    app = build(load_config(data), with_web=False)
    tracemalloc.start()
    started = time.perf_counter()
    report = app.recycler.run(trigger="bench", dry_run=True)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    kept = getattr(report, "blocked_count", len(report.blocked))
    print(f"{os.environ.get('PYTHONPATH', '')}: dry-run pass {seconds:.2f} s, tracemalloc peak "
          f"{peak / 2**20:.1f} MiB, kept back {kept}, listed {len(report.blocked)}, recent {report.recent}")
    app.index.close()


if __name__ == "__main__":
    main()
