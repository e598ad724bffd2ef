"""Known DICOM peers (application entities) and what each may do (rules in appliance/records/peers.py)."""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from .models import utcnow
from .models.retrieval import Peer as PeerRow
from .repository import Repository


@dataclass(frozen=True)
class Peer:
    id: int
    ae_title: str
    host: str
    port: int
    description: str
    can_store: bool  # may send us images
    can_query: bool  # may C-FIND (and query the worklist)
    can_retrieve: bool  # may C-MOVE / C-GET from us
    can_receive_moves: bool  # may be a C-MOVE destination / forward target
    tls: bool  # we call it with DICOM TLS (port is its TLS port)
    cert_fingerprint: str  # SHA-256 of the TLS client certificate it must call with ("" = not pinned)
    created_at: datetime.datetime


class PeersRepo(Repository):
    def list(self) -> list[Peer]:
        return self._all(Peer, PeerRow.select().order_by(PeerRow.ae_title))

    def get(self, ae_title: str) -> Peer | None:
        return self._first(Peer, PeerRow.select().where(PeerRow.ae_title == ae_title))

    def ae_titles(self) -> list[str]:
        return list(PeerRow.select(PeerRow.ae_title).scalars(self.db))

    def add(self, ae_title: str, **values) -> Peer | None:
        """Register a peer; None (and nothing written) when the AE title is taken."""
        def write():
            if PeerRow.select().where(PeerRow.ae_title == ae_title).exists(self.db):
                return None
            PeerRow.insert(ae_title=ae_title, created_at=utcnow(), **values).execute(self.db)
            return self.get(ae_title)

        return self.writer.run(write)

    def update(self, peer_id: int, **changes) -> Peer:
        def write():
            PeerRow.update(**changes).where(PeerRow.id == peer_id).execute(self.db)
            return self._first(Peer, PeerRow.select().where(PeerRow.id == peer_id))

        return self.writer.run(write)

    def remove(self, peer_id: int) -> None:
        self.writer.run(lambda: PeerRow.delete().where(PeerRow.id == peer_id).execute(self.db))
