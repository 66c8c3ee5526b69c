"""The prelude the driver sends to start a transaction, rendered without a database."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import psycopg
import pytest

from shared._deadline import invocation_deadline
from shared._driver import _prelude
from shared._identity import ANONYMOUS, Identity, acting_as, acting_as_login_role

USER = Identity(
    "authenticated",
    {"sub": "9f0c7a4e-8a53-4a57-9e6b-1d0b6f2c3d4e", "role": "x'; --", "email": "a@example.com"},
)
LEGACY_SETTINGS = [
    "request.jwt.claim",
    "request.jwt.claim.sub",
    "request.jwt.claim.role",
    "request.jwt.claim.email",
]


@dataclass
class Transaction:
    """What `_prelude` reads from a connection: its limits and whether it begins a transaction."""

    statement_timeout_ms: int = 8000
    wants_transaction: bool = True
    isolation_level: psycopg.IsolationLevel | None = None
    read_only: bool | None = None


def rendered(conn: Transaction) -> list[tuple[str, list[str]]]:
    return [(statement.decode(), params) for statement, params in _prelude(conn)]


def settings_of(conn: Transaction) -> dict[str, str]:
    """The one SELECT's settings by name, checking that every value is a bound parameter."""
    [(statement, params)] = rendered(conn)
    names = re.findall(r"set_config\('([^']*)', %s, true\)", statement)
    assert statement == "SELECT " + ", ".join(f"set_config('{n}', %s, true)" for n in names)
    return dict(zip(names, params, strict=True))


def test_only_the_login_role_opt_in_sets_its_limits_with_set_local_and_no_role() -> None:
    with acting_as_login_role():
        assert rendered(Transaction()) == [("SET LOCAL statement_timeout = '8000'", [])]


def test_with_no_identity_in_scope_a_transaction_acts_as_anon() -> None:
    settings = settings_of(Transaction())

    assert settings["role"] == "anon"
    assert json.loads(settings["request.jwt.claims"]) == {"role": "anon"}
    assert settings["request.jwt.claim.role"] == "anon"


@pytest.mark.parametrize("wants_transaction", [True, False])
def test_with_an_identity_one_select_sets_limits_role_and_claims_all_bound(
    wants_transaction: bool,
) -> None:
    conn = Transaction(wants_transaction=wants_transaction, read_only=not wants_transaction)

    with acting_as(USER):
        settings = settings_of(conn)

    names = ["statement_timeout", "role", "request.jwt.claims", *LEGACY_SETTINGS]
    if not wants_transaction:
        names.insert(1, "transaction_read_only")
    assert list(settings) == names
    assert settings["role"] == "authenticated"
    assert json.loads(settings["request.jwt.claims"]) == USER.claims


def test_the_legacy_per_claim_settings_are_the_identitys_own_values() -> None:
    with acting_as(USER):
        settings = settings_of(Transaction())

    assert [settings[name] for name in LEGACY_SETTINGS] == [
        "",  # auth.jwt() then reads request.jwt.claims
        USER.claims["sub"],
        USER.claims["role"],
        USER.claims["email"],
    ]


def test_claims_an_identity_lacks_are_set_empty_not_left_alone() -> None:
    with acting_as(ANONYMOUS):
        settings = settings_of(Transaction(statement_timeout_ms=0))

    assert settings == {
        "role": "anon",
        "request.jwt.claims": '{"role":"anon"}',
        "request.jwt.claim": "",
        "request.jwt.claim.sub": "",
        "request.jwt.claim.role": "anon",
        "request.jwt.claim.email": "",
    }


def test_a_claim_that_is_not_a_string_is_set_empty() -> None:
    with acting_as(Identity("authenticated", {"sub": 42, "email": None})):
        settings = settings_of(Transaction(statement_timeout_ms=0))

    assert (settings["request.jwt.claim.sub"], settings["request.jwt.claim.email"]) == ("", "")


@pytest.mark.parametrize("configured_ms", [0, 60_000], ids=["no timeout", "longer than deadline"])
def test_the_statement_timeout_never_outlasts_the_invocations_deadline(configured_ms: int) -> None:
    with invocation_deadline(5), acting_as_login_role():
        [(statement, _)] = rendered(Transaction(statement_timeout_ms=configured_ms))

    timeout_ms = int(statement.split("'")[1])
    assert 4_000 < timeout_ms <= 5_000, statement


def test_a_statement_timeout_within_the_deadline_is_kept() -> None:
    with invocation_deadline(5), acting_as_login_role():
        assert rendered(Transaction(statement_timeout_ms=300)) == [
            ("SET LOCAL statement_timeout = '300'", [])
        ]
