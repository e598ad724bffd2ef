"""Failed imports: list, retry, export and delete what the encrypted quarantine holds.

The CLI (``pacs-appliance import failed ...``) and the admin page call this one
class, so both behave the same and audit the same:

- a retry feeds the item through the one ingest path again, from anonymous memory
  (memfd: never a file on disk, gone if the process dies). If everything in it is
  now stored (or already was), the item leaves the quarantine; otherwise it stays
  with the new reason. Audited as ``import.failed.retry``.
- an export hands out the plaintext file: the one way patient data leaves the
  quarantine readable, so each is audited (``import.failed.export``, who and which item).
- a delete is an admin's explicit decision; audited (``import.failed.delete``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..archive.quarantine import FailedItem, Quarantine
from ..ingest import Ingestor, Origin
from .runner import Status, import_entry
from .sources import is_dicomdir_name, source_for_file


@dataclass(frozen=True)
class RetryResult:
    item: FailedItem
    imported: bool  # everything in it is now in the archive; the item is gone from the quarantine
    summary: str  # counts, or why it failed again


class FailedImports:
    def __init__(self, quarantine: Quarantine, ingestor: Ingestor, audit, member_max_bytes: int = 4 << 30):
        self.quarantine = quarantine
        self.ingestor = ingestor
        self.audit = audit
        self.member_max_bytes = member_max_bytes

    def list(self) -> list[FailedItem]:
        return self.quarantine.items()

    def get(self, item_id: str) -> FailedItem:
        return self.quarantine.get(item_id)

    def retry(self, item_id: str, actor: str, address: str = "") -> RetryResult:
        item = self.quarantine.get(item_id)
        ok, summary = self._retry(item, actor)
        if ok:
            self.quarantine.delete(item_id)
        else:
            self.quarantine.update_reason(item_id, summary, f"retry:{actor}")
        self.audit.record("import.failed.retry", actor, address=address,
                          detail=f"item {item_id}: {'imported' if ok else 'failed again'}")
        return RetryResult(item, ok, summary)

    def export(self, item_id: str, actor: str, address: str = "") -> tuple[FailedItem, Iterator[bytes]]:
        """The plaintext file (audited before the first byte is handed out)."""
        item = self.quarantine.get(item_id)
        self.audit.record("import.failed.export", actor, address=address,
                          detail=f"item {item_id}: plaintext copy of a failed import ({item.size} bytes)")
        return item, self.quarantine.iter_content(item_id)

    def export_to(self, item_id: str, folder: Path, actor: str) -> Path:
        """Write the plaintext file into ``folder`` (0600, never over an existing file); return its path."""
        item, chunks = self.export(item_id, actor)
        name = Path(item.name).name or item_id
        dest = Path(folder) / f"{item_id[:8]}-{name}"
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        return dest

    def delete(self, item_id: str, actor: str, address: str = "") -> FailedItem:
        item = self.quarantine.get(item_id)
        self.quarantine.delete(item_id)
        self.audit.record("import.failed.delete", actor, address=address, detail=f"item {item_id} deleted")
        return item

    def _retry(self, item: FailedItem, actor: str) -> tuple[bool, str]:
        if item.kind != "file":
            return False, f"cannot be retried: {item.reason}"
        if is_dicomdir_name(Path(item.name).name):
            return False, ("a DICOMDIR cannot be retried on its own: put the whole CD/DVD folder into the "
                           "inbox again (the files it lists that are already stored are skipped)")
        fd = os.memfd_create("pacs-retry", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as fh:
                for chunk in self.quarantine.iter_content(item.item_id):
                    fh.write(chunk)
            source = source_for_file(Path(f"/proc/self/fd/{fd}"), self.member_max_bytes, label=item.name)
            try:
                if source.error:
                    return False, source.error
                results = [import_entry(self.ingestor, e, Origin("import", f"retry:{actor}"))
                           for e in source.entries]
            finally:
                source.close()
        finally:
            os.close(fd)
        bad = [r for r in results if r.status in (Status.FAILED, Status.RETRY)]
        if not bad:
            done = sum(r.status is not Status.ALREADY for r in results)
            return True, f"{done} imported, {len(results) - done} already present"
        if len(results) == 1:
            return False, bad[0].reason
        lines = [f"{r.entry.label.split(': ', 1)[-1]}: {r.reason}" for r in bad[:100]]
        return False, (f"{len(bad)} of {len(results)} files in it could not be imported; the other "
                       f"{len(results) - len(bad)} are in.\n" + "\n".join(lines))
