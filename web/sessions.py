"""Server-side browser sessions and the login throttle.

The browser's (signed, HttpOnly) Flask session cookie carries only a random session
id and the CSRF token; the session itself lives in the index (``WebSession``,
keyed by the id's SHA-256), so it can expire after idle time and a maximum age, be
ended on logout, and be ended everywhere when a user is disabled or their password
changes. Logging in always issues a new id (no session fixation).

The login throttle is in memory: counting failures per user name and per address,
and refusing logins for a while after too many. A restart clears it, which an
attacker on the LAN cannot trigger.
"""
from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
import time
from collections import defaultdict, deque

from appliance.index import utcnow
from appliance.index.accounts import AccountsRepo, User

TOUCH_EVERY = datetime.timedelta(seconds=60)  # write last_seen at most this often per session


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class SessionStore:
    def __init__(self, accounts: AccountsRepo, idle_minutes: int, max_hours: int):
        self.accounts = accounts
        self.idle = datetime.timedelta(minutes=idle_minutes)
        self.max_age = datetime.timedelta(hours=max_hours)

    def create(self, user: User, address: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = utcnow()

        self.accounts.add_session(_hash(sid), user.id, address[:64], now, now + self.max_age)
        return sid

    def lookup(self, sid: str) -> User | None:
        """The session's user if the session is alive (and touch it), else None."""
        if not sid:
            return None
        found = self.accounts.session(_hash(sid))
        if found is None:
            return None
        row, user = found
        now = utcnow()
        if now >= row.expires_at or now - row.last_seen >= self.idle or user.disabled:
            self.end(sid)
            return None
        if now - row.last_seen >= TOUCH_EVERY:
            self.accounts.touch_session(row.id, now)
        return user

    def end(self, sid: str) -> None:
        self.accounts.end_session(_hash(sid))

    def active_count(self) -> int:
        return self.accounts.count_active_sessions(utcnow(), self.idle)


class LoginThrottle:
    """Refuses logins for ``lockout`` seconds after ``max_failures`` failures within that time."""

    def __init__(self, max_failures: int, lockout_minutes: int, clock=time.monotonic):
        self.max_failures = max(1, max_failures)
        self.lockout = lockout_minutes * 60.0
        self.clock = clock
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    @staticmethod
    def keys(username: str, address: str) -> list[str]:
        return [f"user:{(username or '').lower()}", f"addr:{address}"]

    def _prune(self, key: str, now: float) -> deque:
        q = self._failures[key]
        while q and now - q[0] >= self.lockout:
            q.popleft()
        return q

    def locked_for(self, username: str, address: str) -> float:
        """Seconds until a login may be tried again (0 when it may be tried now)."""
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key in self.keys(username, address):
                q = self._prune(key, now)
                if len(q) >= self.max_failures:
                    wait = max(wait, self.lockout - (now - q[-1]))
            return wait

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self.keys(username, address):
                q = self._prune(key, now)
                q.append(now)
                while len(q) > self.max_failures:
                    q.popleft()

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            for key in self.keys(username, address):
                self._failures.pop(key, None)
