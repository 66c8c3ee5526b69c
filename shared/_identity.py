"""Who a database transaction acts as: a Postgres role and the verified JWT claims.

Row-level security decides by `current_user` and the claims `auth.uid()` reads, as on Supabase's
Data API; `shared._driver` sets both at the start of every transaction begun inside
`acting_as(identity)`. With no verified caller a transaction acts as `anon` (least privilege);
acting as the login role, the tables' owner, is an explicit `acting_as_login_role()`. Only the
three API roles can be acted as, checked here before anything reaches `SET ROLE`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

ROLES = frozenset({"anon", "authenticated", "service_role"})
"""The roles a request can act as: Supabase's, created elsewhere by the platform migration."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as in Postgres."""

    role: str  # "authenticated", "anon" or "service_role": the Postgres role
    claims: Mapping[str, Any]  # the verified JWT claims; for anon, those of the anon key

    def __post_init__(self) -> None:
        """Refuse any role but the three API roles: the login role's own power is never lent."""
        if self.role not in ROLES:
            raise ValueError(f"cannot act as role {self.role!r}; one of {sorted(ROLES)}")

    @property
    def user_id(self) -> str | None:
        """The user's id (the `sub` claim), what `auth.uid()` returns; None for anon."""
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else None

    def claims_json(self) -> str:
        """The claims as `request.jwt.claims` holds them: JSON, read by `auth.jwt()`."""
        return json.dumps(dict(self.claims), separators=(",", ":"))


ANONYMOUS = Identity("anon", {"role": "anon"})
"""Whoever has no verified token: Supabase's `anon` role, with the claims its anon key carries
that policies read (`auth.role()` is 'anon', `auth.uid()` is null)."""

# None stands for the login role, reachable only through `acting_as_login_role()`.
_identity: ContextVar[Identity | None] = ContextVar("acting_identity", default=ANONYMOUS)


@contextmanager
def acting_as(identity: Identity) -> Iterator[Identity]:
    """Run the block's transactions as `identity`, then restore the identity before it."""
    token = _identity.set(identity)
    try:
        yield identity
    finally:
        _identity.reset(token)


@contextmanager
def acting_as_login_role() -> Iterator[None]:
    """Run the block's transactions as the login role, the tables' owner: no role switch.

    Only for work that needs the owner's rights whoever asks (migrations, the service-only
    connection monitor, test setup), never for a request's own data: that belongs to the
    verified caller (`acting_as`), or to `anon`.
    """
    token = _identity.set(None)
    try:
        yield
    finally:
        _identity.reset(token)


def current_identity() -> Identity | None:
    """The identity in scope: ANONYMOUS unless a block says otherwise; None only inside
    `acting_as_login_role()`."""
    return _identity.get()
