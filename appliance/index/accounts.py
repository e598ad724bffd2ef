"""Users, web sessions and API tokens (the rules about them are in appliance/records/accounts.py and web/sessions.py)."""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from .models import User as UserRow, utcnow
from .models.web import ApiToken as TokenRow, WebSession as SessionRow
from .repository import Repository, to_record


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str
    role: str
    disabled: bool
    created_at: datetime.datetime


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    username: str
    name: str
    prefix: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    revoked: bool


@dataclass(frozen=True)
class WebSession:
    id: int
    user_id: int
    last_seen: datetime.datetime
    expires_at: datetime.datetime


def _tokens():
    return TokenRow.select(TokenRow, TokenRow.user.alias("user_id"), UserRow.username).join(UserRow)


class AccountsRepo(Repository):
    # --- users ------------------------------------------------------------------------------------

    def user(self, username: str) -> User | None:
        return self._first(User, UserRow.select().where(UserRow.username == username))

    def user_by_id(self, user_id: int) -> User | None:
        return self._first(User, UserRow.select().where(UserRow.id == user_id))

    def users(self) -> list[User]:
        return self._all(User, UserRow.select().order_by(UserRow.username))

    def add_user(self, username: str, password_hash: str, role: str) -> User:
        """Inside the writer."""
        UserRow.insert(username=username, password_hash=password_hash, role=role, disabled=False,
                       created_at=utcnow()).execute(self.db)
        return self.user(username)

    def change_user(self, user_id: int, **changes) -> User:
        """Set any of password_hash, role, disabled. Inside the writer."""
        UserRow.update(**changes).where(UserRow.id == user_id).execute(self.db)
        return self.user_by_id(user_id)

    def other_active_admin_exists(self, user_id: int) -> bool:
        return (UserRow.select().where((UserRow.role == "admin") & (UserRow.disabled == False)  # noqa: E712
                                       & (UserRow.id != user_id)).exists(self.db))

    def end_sessions(self, user_id: int) -> None:
        """End the user's web sessions and revoke their API tokens. Inside the writer."""
        SessionRow.delete().where(SessionRow.user == user_id).execute(self.db)
        TokenRow.update(revoked=True).where(TokenRow.user == user_id).execute(self.db)

    # --- API tokens (only their SHA-256 is stored) ------------------------------------------------

    def add_token(self, user_id: int, name: str, token_hash: str, prefix: str) -> ApiToken:
        """Inside the writer."""
        token_id = TokenRow.insert(user=user_id, name=name, token_hash=token_hash, prefix=prefix,
                                   created_at=utcnow(), revoked=False).execute(self.db)
        return self.token(token_id)

    def revoke_token(self, token_id: int) -> None:
        """Inside the writer."""
        TokenRow.update(revoked=True).where(TokenRow.id == token_id).execute(self.db)

    def token(self, token_id: int) -> ApiToken | None:
        return self._first(ApiToken, _tokens().where(TokenRow.id == token_id))

    def active_tokens(self, user_id: int | None = None) -> list[ApiToken]:
        """Unrevoked tokens, oldest first: all of them, or one user's."""
        query = _tokens().where(TokenRow.revoked == False)  # noqa: E712
        if user_id is not None:
            query = query.where(TokenRow.user == user_id)
        return self._all(ApiToken, query.order_by(TokenRow.id))

    def token_by_hash(self, token_hash: str) -> tuple[ApiToken, User] | None:
        """The unrevoked token with this hash and its owner (disabled or not), or None."""
        row = (TokenRow.select(TokenRow.id.alias("token_id"), TokenRow.name, TokenRow.prefix,
                               TokenRow.created_at.alias("token_created_at"), TokenRow.last_used_at, UserRow)
               .join(UserRow).where((TokenRow.token_hash == token_hash) & (TokenRow.revoked == False))  # noqa: E712
               .dicts().first(self.db))
        if row is None:
            return None
        user = to_record(User, row)
        return ApiToken(row["token_id"], user.id, user.username, row["name"], row["prefix"],
                        row["token_created_at"], row["last_used_at"], False), user

    def touch_token(self, token_id: int, now: datetime.datetime) -> None:
        """Note a token's use; submitted to the writer, not waited for."""
        self.writer.post(lambda: TokenRow.update(last_used_at=now).where(TokenRow.id == token_id).execute(self.db))

    # --- web sessions (each call commits on its own) -----------------------------------------------

    def add_session(self, sid_hash: str, user_id: int, address: str, now: datetime.datetime,
                    expires_at: datetime.datetime) -> None:
        def write():
            SessionRow.delete().where(SessionRow.expires_at < now).execute(self.db)  # tidy up on the way
            SessionRow.insert(sid_hash=sid_hash, user=user_id, address=address, created_at=now, last_seen=now,
                              expires_at=expires_at).execute(self.db)

        self.writer.run(write)

    def session(self, sid_hash: str) -> tuple[WebSession, User] | None:
        """The live-or-not session with this hash and its user, or None."""
        row = (SessionRow.select(SessionRow.id.alias("session_id"), SessionRow.last_seen, SessionRow.expires_at,
                                 UserRow).join(UserRow)
               .where(SessionRow.sid_hash == sid_hash).dicts().first(self.db))
        if row is None:
            return None
        user = to_record(User, row)
        return WebSession(row["session_id"], user.id, row["last_seen"], row["expires_at"]), user

    def touch_session(self, session_id: int, now: datetime.datetime) -> None:
        self.writer.run(lambda: SessionRow.update(last_seen=now).where(SessionRow.id == session_id).execute(self.db))

    def end_session(self, sid_hash: str) -> None:
        self.writer.run(lambda: SessionRow.delete().where(SessionRow.sid_hash == sid_hash).execute(self.db))

    def count_active_sessions(self, now: datetime.datetime, idle: datetime.timedelta) -> int:
        return (SessionRow.select().where((SessionRow.expires_at > now) & (SessionRow.last_seen > now - idle))
                .count(self.db))
