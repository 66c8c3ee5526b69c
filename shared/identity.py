"""Who a database transaction acts as: the Postgres role and the verified JWT claims.

Row-level security decides which rows a statement sees by `current_user` and by what
`auth.uid()` / `auth.jwt()` read from the transaction's `request.jwt.claims` setting, as on
Supabase's Data API. `acting_as(identity)` puts an identity in scope for a block (a request);
`shared.driver` then starts every transaction begun inside it by switching to that role and
setting those claims, transaction-locally and in the same exchange as the first statement, so
nothing of it outlives the transaction on a server connection that the pooler hands to the next
client. With no identity in scope, transactions run as the login role (health checks, the
connection monitor, migrations): who may see user data is decided where the identity is.

Only three roles can be acted as, Supabase's API roles; anything else is refused here, before
it could ever reach `SET ROLE`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANONYMOUS",
    "ROLES",
    "Identity",
    "acting_as",
    "current_identity",
]

ROLES = frozenset({"anon", "authenticated", "service_role"})
"""The roles a request can act as: Supabase's, created elsewhere by the platform migration."""

_identity: ContextVar[Identity | None] = ContextVar("acting_identity", default=None)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as in Postgres."""

    role: str  # "authenticated", "anon" or "service_role": the Postgres role
    claims: Mapping[str, Any]  # the verified JWT claims; {} for anon

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


ANONYMOUS = Identity("anon", {})


@contextmanager
def acting_as(identity: Identity | None) -> Iterator[Identity | None]:
    """Run the block's transactions as `identity` (None: as the login role), then restore."""
    token = _identity.set(identity)
    try:
        yield identity
    finally:
        _identity.reset(token)


def current_identity() -> Identity | None:
    """The identity in scope; None means the login role."""
    return _identity.get()
