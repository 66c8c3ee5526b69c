"""Identities and their scope (no database); the prelude sent for them is in test_driver."""

from __future__ import annotations

import pytest

from shared.identity import (
    ANONYMOUS,
    Identity,
    acting_as,
    current_identity,
)

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
        with acting_as(None):
            seen.append(current_identity())
        seen.append(current_identity())
    seen.append(current_identity())

    assert seen == [USER, None, USER, None]
