"""Issue 14 item 11: whatever the umask, patient data and secrets are created private.

An admin who runs `pacs-appliance init` or `serve` from a shell (umask 022) must not get a
world-readable index, config or archive. Run with umask 022 through init, serve, an inbox
import (archive fan-out folders), a failed import (the quarantine) and `after_import = "move"`.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import synth
from helpers import Server, init_data_dir, wait_until

FAST_INBOX = {"PACS_INBOX_STABLE_SECONDS": "0.4", "PACS_INBOX_POLL_SECONDS": "1"}


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_umask_022_creates_nothing_world_readable(tmp_path):
    old = os.umask(0o022)
    try:
        data = init_data_dir(tmp_path / "data")
        srv = Server(data, env={**FAST_INBOX, "PACS_INBOX_AFTER_IMPORT": "move"}).start()
        try:
            synth.write_study(data / "inbox" / "cd", n_series=1, per_series=2)
            (data / "inbox" / "notes.txt").write_text("not DICOM")
            wait_until(lambda: not any(p.is_file() for p in (data / "inbox" / "cd").rglob("*"))
                       and not (data / "inbox" / "notes.txt").exists(), 30, what="the inbox import")
        finally:
            srv.stop()
    finally:
        os.umask(old)

    modes = _modes(data)
    loose = {p: oct(m) for p, m in modes.items() if m & 0o007}
    assert not loose, f"world-accessible: {loose}"
    assert modes["index.db"] == 0o600
    assert modes["appliance.toml"] == 0o600
    archive_dirs = [p for p in modes if p.startswith("archive") and (data / p).is_dir()]
    assert archive_dirs and all(modes[p] == 0o700 for p in archive_dirs), {p: oct(modes[p]) for p in archive_dirs}
    inbox_subdirs = [p for p in modes if p.startswith("inbox/processed") and (data / p).is_dir()]
    assert inbox_subdirs and all(modes[p] == 0o700 for p in inbox_subdirs), {p: oct(modes[p]) for p in inbox_subdirs}
