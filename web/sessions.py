"""Server-side browser sessions and the login throttle.

The browser's (signed, HttpOnly) Flask session cookie carries only a random session
id and the CSRF token; the session itself lives in the index (``WebSession``,
keyed by the id's SHA-256), so it can expire after idle time and a maximum age, be
ended on logout, and be ended everywhere when a user is disabled or their password
changes. Logging in always issues a new id (no session fixation).

The login throttle is in memory (see ``LoginThrottle``): failures per user name and
address lock that pair, failures per address lock the address, and failures per user
name from everywhere slow down guesses from addresses the user has not logged in from.
A restart clears it, which an attacker on the LAN cannot trigger.
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
    """Bounds password guessing without letting a remote lock a user out of their own workstation.

    Three counters, each over the last ``lockout`` seconds:
    - per user name *and* address: ``max_failures`` failures lock that pair for ``lockout``
      (the guesser's address is locked for that name; the user's own address is not);
    - per address, any name: ``ADDRESS_FACTOR`` times as many lock the address (password spraying);
    - per user name, any address: past ``max_failures`` failures, addresses the user has not
      logged in from since the start get an exponential back-off (1, 2, 4 ... ``max_backoff``
      seconds after the last failure) instead of a lock. So many addresses together make at most
      one guess every ``max_backoff`` seconds, and the right password from an address the user
      has already used that way (browser or an HTTP Basic client) is never refused.
    """

    ADDRESS_FACTOR = 4
    TRUSTED_PER_USER = 32  # addresses remembered per user name (a clinic has few workstations)

    def __init__(self, max_failures: int, lockout_minutes: int, clock=time.monotonic, max_backoff: float = 30.0):
        self.max_failures = max(1, max_failures)
        self.lockout = lockout_minutes * 60.0
        self.max_backoff = max_backoff
        self.clock = clock
        self._failures: dict[tuple, deque] = defaultdict(deque)
        self._trusted: dict[str, dict[str, None]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: tuple, now: float) -> deque:
        q = self._failures[key]
        while q and now - q[0] >= self.lockout:
            q.popleft()
        if not q:
            del self._failures[key]  # keys an attacker invents must not pile up
        return q

    def locked_for(self, username: str, address: str) -> float:
        """Seconds until a login may be tried again (0 when it may be tried now)."""
        name = (username or "").lower()
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key, limit in ((("pair", name, address), self.max_failures),
                               (("addr", address), self.max_failures * self.ADDRESS_FACTOR)):
                q = self._prune(key, now)
                if len(q) >= limit:
                    wait = max(wait, self.lockout - (now - q[-1]))
            q = self._prune(("user", name), now)
            if len(q) >= self.max_failures and address not in self._trusted.get(name, ()):
                backoff = min(self.max_backoff, 2.0 ** (len(q) - self.max_failures))
                wait = max(wait, backoff - (now - q[-1]))
            return max(0.0, wait)

    def failed(self, username: str, address: str) -> None:
        name = (username or "").lower()
        now = self.clock()
        with self._lock:
            for key, keep in ((("pair", name, address), self.max_failures),
                              (("addr", address), self.max_failures * self.ADDRESS_FACTOR),
                              (("user", name), self.max_failures + 16)):  # 2**16 s: past any back-off cap
                q = self._prune(key, now)
                q.append(now)
                while len(q) > keep:
                    q.popleft()
                self._failures[key] = q

    def succeeded(self, username: str, address: str) -> None:
        name = (username or "").lower()
        with self._lock:
            self._failures.pop(("pair", name, address), None)
            trusted = self._trusted.setdefault(name, {})
            trusted.pop(address, None)
            trusted[address] = None  # most recent last
            while len(trusted) > self.TRUSTED_PER_USER:
                del trusted[next(iter(trusted))]
