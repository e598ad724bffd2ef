"""``pacs-appliance import PATH...``: a one-shot import with progress and a summary.

Sources are only read, never changed or deleted (a USB stick or CD stays as it
was). The command may run while the server runs on the same data directory:
both write the SQLCipher index in WAL mode, and each connection waits up to
its busy timeout for the other's transaction instead of failing.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from ..ingest import Ingestor, Origin
from .runner import EntryResult, Status, Tally, import_entry
from .sources import Entry, discover

PLAIN_EVERY_SECONDS = 2.0


@dataclass
class Summary:
    tally: Tally = field(default_factory=Tally)
    skipped: int = 0  # files on DICOMDIR media that the DICOMDIR does not list
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.tally.total / self.seconds if self.seconds > 0 else 0.0

    def lines(self, max_failures: int = 200) -> list[str]:
        c = self.tally.counts
        out = [f"Imported:        {c[Status.IMPORTED] + c[Status.REPLACED]}"]
        if c[Status.REPLACED]:
            out.append(f"  of which {c[Status.REPLACED]} replaced a different object with the same SOP Instance UID")
        if c[Status.HELD]:
            out.append(f"Held for admin:  {c[Status.HELD]} (another patient under a stored SOP Instance UID: "
                       "`pacs-appliance storage versions --held`)")
        out.append(f"Already present: {c[Status.ALREADY]}")
        out.append(f"Failed:          {self.tally.failed}")
        if self.skipped:
            out.append(f"Skipped:         {self.skipped} file(s) on DICOMDIR media not listed in the DICOMDIR")
        out.append(f"Time:            {self.seconds:.1f} s ({self.rate:.1f} files/s)")
        for label, reason in self.tally.failures[:max_failures]:
            out.append(f"  failed: {label}: {reason}")
        if len(self.tally.failures) > max_failures:
            out.append(f"  ... and {len(self.tally.failures) - max_failures} more failures")
        return out


class Progress:
    """A bar with count, rate and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, total: int, stream: TextIO, tty: bool):
        self.total, self.stream, self.tty = total, stream, tty
        self.done = 0
        self.start = time.monotonic()
        self._last_plain = self.start
        self._last_draw = 0.0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def text(self) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else 0
        return f"{self.done}/{self.total} files, {rate:.1f}/s, ETA {_clock(eta)}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self._last_draw >= 0.1 or self.done == self.total):
            self._last_draw = now
            width = 30
            filled = int(width * self.done / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.text()}   ")
            self.stream.flush()
        elif not self.tty and (now - self._last_plain >= PLAIN_EVERY_SECONDS or self.done == self.total):
            self._last_plain = time.monotonic()
            self.stream.write(f"import: {self.text()}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def run_import(ingestor: Ingestor, paths: list[Path], origin: Origin, *, member_max_bytes: int, workers: int = 2,
               progress_stream: TextIO | None = None, tty: bool | None = None,
               on_result: Callable[[EntryResult], None] | None = None) -> Summary:
    """Import everything below ``paths``; return counts and failures with reasons."""
    stream = progress_stream or sys.stderr
    tty = stream.isatty() if tty is None else tty
    summary = Summary()
    started = time.monotonic()
    sources = discover([Path(p) for p in paths], member_max_bytes)
    entries: list[Entry] = []
    for source in sources:
        if source.error:
            summary.tally.add_failure(str(source.path), source.error)
        entries.extend(source.entries)
        summary.skipped += len(source.unlisted)
    progress = Progress(len(entries), stream, tty)
    if not tty:
        stream.write(f"import: {len(entries)} file(s) to import\n")
    try:
        results: list[EntryResult] = []
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="import") as pool:
            for result in pool.map(lambda e: import_entry(ingestor, e, origin), entries):
                results.append(result)
                progress.advance()
        # A passing error (say, a server starting up meanwhile cleaned the archive's temp folder) gets
        # one more try; disk full does not go away by itself.
        for i, r in enumerate(results):
            if r.status is Status.RETRY and not r.reason.startswith("disk full"):
                results[i] = import_entry(ingestor, r.entry, origin)
        for result in results:
            summary.tally.add(result)
            if on_result:
                on_result(result)
    finally:
        progress.finish()
        for source in sources:
            source.close()
    summary.seconds = time.monotonic() - started
    return summary
