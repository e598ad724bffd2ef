"""Bringing an offsite-only study back from the browser, one study at a time, with its progress.

The work is the recycler's own restore (the one ``pacs-appliance storage restore``
runs): download, verify and re-index under the old object ids. This only runs it
off the request thread and remembers how far it got, so the study page can show
progress and open the viewer when the study is back.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass


@dataclass
class Progress:
    state: str = "queued"  # queued, running, done, failed
    message: str = "waiting for another study to finish coming back"
    done: int = 0
    total: int = 0


class Restores:
    def __init__(self, recycler):
        self.recycler = recycler
        # One worker: restores share the disk reserve and the backup target's bandwidth.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-restore")
        self._lock = threading.Lock()
        self._progress: dict[str, Progress] = {}

    def start(self, study_uid: str, actor: str) -> dict:
        """Queue the study's restore (again, if an earlier attempt failed); its progress so far."""
        with self._lock:
            current = self._progress.get(study_uid)
            if current is not None and current.state in ("queued", "running"):
                return asdict(current)
            self._progress[study_uid] = current = Progress()
        self._pool.submit(self._run, study_uid, actor)
        return asdict(current)

    def status(self, study_uid: str) -> dict | None:
        with self._lock:
            current = self._progress.get(study_uid)
            return asdict(current) if current else None

    def _set(self, study_uid: str, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._progress[study_uid], key, value)

    def _run(self, study_uid: str, actor: str) -> None:
        def progress(message: str) -> None:
            counted = re.search(r"(\d+)/(\d+)", message)
            extra = {"done": int(counted.group(1)), "total": int(counted.group(2))} if counted else {}
            self._set(study_uid, message=message, **extra)

        self._set(study_uid, state="running", message="connecting to the backup target")
        try:
            result = self.recycler.restore(study_uid, actor=actor, progress=progress)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is what the person must read
            self._set(study_uid, state="failed", message=str(exc) or exc.__class__.__name__)
            return
        restored = getattr(result, "instances", None)
        self._set(study_uid, state="done", message=f"back on this box{f' ({restored} images)' if restored else ''}")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
