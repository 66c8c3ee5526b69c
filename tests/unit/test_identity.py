"""Identities, their scope, the boundary's reset, and the prelude the driver sends for them
(no database)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from shared.driver import _prelude
from shared.http import LambdaEvent, json_response, lambda_boundary
from shared.identity import (
    ANONYMOUS,
    Identity,
    acting_as,
    acting_as_login_role,
    current_identity,
)
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

USER = Identity("authenticated", {"sub": "9f0c7a4e-8a53-4a57-9e6b-1d0b6f2c3d4e", "role": "x'; --"})


@dataclass
class Transaction:
    """What `_prelude` reads from a connection: its limits and whether it begins a transaction."""

    statement_timeout_ms: int = 8000
    wants_transaction: bool = True
    isolation_level: psycopg.IsolationLevel | None = None
    read_only: bool | None = None


def rendered(conn: Transaction) -> list[tuple[str, list[str]]]:
    return [(statement.as_string(), params) for statement, params in _prelude(conn)]


@pytest.mark.parametrize("role", ["postgres", "supabase_admin", "authenticated; DROP TABLE x", ""])
def test_only_the_three_api_roles_can_be_acted_as(role: str) -> None:
    with pytest.raises(ValueError, match="cannot act as role"):
        Identity(role, {})


def test_user_id_is_the_sub_claim_and_none_for_anon() -> None:
    assert (USER.user_id, ANONYMOUS.user_id) == (USER.claims["sub"], None)
    assert Identity("authenticated", {"sub": 42}).user_id is None


def test_acting_as_scopes_the_identity_and_restores_the_outer_one() -> None:
    seen = []
    with acting_as(USER):
        seen.append(current_identity())
        with acting_as_login_role():
            seen.append(current_identity())
        seen.append(current_identity())
    seen.append(current_identity())

    assert seen == [USER, None, USER, ANONYMOUS]


def test_with_no_identity_in_scope_a_transaction_acts_as_anon() -> None:
    [(statement, params)] = rendered(Transaction())

    assert current_identity() is ANONYMOUS
    assert "set_config('role', %s, true)" in statement
    assert params == ["8000", "anon", '{"role":"anon"}']


def test_only_the_login_role_opt_in_sets_the_limits_with_set_local_and_no_role() -> None:
    with acting_as_login_role():
        assert rendered(Transaction()) == [("SET LOCAL statement_timeout = '8000'", [])]


@pytest.mark.parametrize("wants_transaction", [True, False])
def test_with_an_identity_one_select_sets_limits_role_and_claims_all_bound(
    wants_transaction: bool,
) -> None:
    conn = Transaction(wants_transaction=wants_transaction, read_only=not wants_transaction)

    with acting_as(USER):
        [(statement, params)] = rendered(conn)

    names = ["statement_timeout", "role", "request.jwt.claims"]
    if not wants_transaction:
        names.insert(1, "transaction_read_only")
    assert statement == "SELECT " + ", ".join(f"set_config('{n}', %s, true)" for n in names)
    assert dict(zip(names, params, strict=True))["role"] == "authenticated"
    assert json.loads(dict(zip(names, params, strict=True))["request.jwt.claims"]) == USER.claims


def test_an_identity_is_set_even_without_limits() -> None:
    with acting_as(ANONYMOUS):
        [(statement, params)] = rendered(Transaction(statement_timeout_ms=0))

    assert statement == (
        "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"
    )
    assert params == ["anon", '{"role":"anon"}']


@lambda_boundary
def report_identity(_event: LambdaEvent, _context: Any) -> dict[str, Any]:
    identity = current_identity()
    return dict(json_response(200, {"role": identity.role if identity else "login role"}))


@pytest.mark.parametrize("leaked", [USER, None], ids=["a user", "the login role"])
def test_the_boundary_starts_every_invocation_as_anon(leaked: Identity | None) -> None:
    """Whatever identity earlier code left in scope, the handler finds ANONYMOUS."""
    with acting_as(leaked) if leaked else acting_as_login_role():
        response = report_identity(http_event("GET /identity", token=""), LambdaTestContext())

    assert body_of(response) == {"role": "anon"}
