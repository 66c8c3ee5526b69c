"""Identities, their scope and the boundary's reset (no database); the prelude sent for them
is in test_driver."""

from __future__ import annotations

from typing import Any

import pytest

from shared._boundary import LambdaEvent, json_response, lambda_boundary
from shared._identity import ANONYMOUS, Identity, acting_as, acting_as_login_role, current_identity
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

USER = Identity("authenticated", {"sub": "9f0c7a4e-8a53-4a57-9e6b-1d0b6f2c3d4e", "role": "x'; --"})


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


def test_with_no_identity_in_scope_the_identity_is_anon() -> None:
    assert current_identity() is ANONYMOUS
    assert ANONYMOUS.claims == {"role": "anon"}


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
