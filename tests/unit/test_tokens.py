"""Access token verification against a real JWKS served over loopback HTTP; no database.

Each refusal is paired with the same call carrying a genuine token, which must pass: a check
that were skipped would fail the pair. Where the keys come from and how long they are trusted:
test_signing_keys.py.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared import _tokens as auth
from shared._error_mapping import error_response
from shared._errors import (
    AppError,
    AuthConfigError,
    ForbiddenError,
    InvalidTokenError,
    NotAuthenticatedError,
)
from shared._identity import ANONYMOUS, ROLES
from shared._settings import get_settings
from shared._tokens import (
    TokenVerifier,
    get_verifier,
    identity_from_authorization,
    service_role_only,
    user_only,
)
from tests.fixtures.tokens import FORGERIES, Tokens


def refused(call: Any, *args: Any) -> AppError:
    """The application error `call(*args)` raises; fails the test if it returns."""
    with pytest.raises(AppError) as caught:
        call(*args)
    return caught.value


# --- identity from the Authorization header ---------------------------------------------


def test_a_genuine_token_becomes_the_identity_it_names(tokens: Tokens) -> None:
    user_id = str(uuid.uuid4())

    identity = identity_from_authorization(f"Bearer {tokens.token(user_id)}")

    assert identity.role == "authenticated"
    assert identity.user_id == user_id
    assert identity.claims["aud"] == "authenticated"
    assert identity.claims["iss"] == f"{tokens.supabase_url}/auth/v1"
    assert identity_from_authorization(f"bearer  {tokens.service_role()} ").role == "service_role"


def test_the_anonymous_identity_has_no_user() -> None:
    assert (ANONYMOUS.role, dict(ANONYMOUS.claims), ANONYMOUS.user_id) == (
        "anon",
        {"role": "anon"},
        None,
    )


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token abc"])
def test_no_bearer_token_is_401_with_a_bare_bearer_challenge(
    tokens: Tokens, header: str | None
) -> None:
    error = refused(identity_from_authorization, header)
    response = error_response(error)

    assert type(error) in {NotAuthenticatedError, InvalidTokenError}
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.body["code"] in {"not_authenticated", "invalid_token"}
    assert identity_from_authorization(f"Bearer {tokens.token()}").role == "authenticated"


def test_a_missing_token_gets_no_error_code_in_its_challenge(tokens: Tokens) -> None:
    """RFC 6750, 3.1: a request without credentials gets the scheme and nothing else."""
    response = error_response(refused(identity_from_authorization, None))

    assert response.headers == {"WWW-Authenticate": "Bearer"}
    assert response.body == {
        "code": "not_authenticated",
        "message": "A Supabase access token is required (Authorization: Bearer)",
    }


@pytest.mark.parametrize("kind", FORGERIES)
def test_each_forgery_is_refused_and_the_genuine_token_accepted(tokens: Tokens, kind: str) -> None:
    user_id = str(uuid.uuid4())

    error = refused(identity_from_authorization, f"Bearer {tokens.forged(kind, user_id)}")
    response = error_response(error)
    genuine = identity_from_authorization(f"Bearer {tokens.token(user_id)}")

    assert isinstance(error, InvalidTokenError)
    assert response.status_code == 401
    assert response.body["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", error_description="{response.body["message"]}"'
    )
    assert genuine.user_id == user_id


def test_each_refusal_is_logged_without_any_part_of_the_token(
    tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusals are logged with their reason; a token's signature or payload in a log line
    would hand it to whoever reads the logs."""
    caplog.set_level(logging.DEBUG)
    sent = [tokens.forged(kind) for kind in FORGERIES]

    for token in sent:
        refused(identity_from_authorization, f"Bearer {token}")

    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    rejected = [r for r in caplog.records if r.getMessage() == "access token rejected"]
    # Each token's signature, and its payload, is specific to it; the header is not.
    fragments = {part for token in sent for part in token.split(".")[1:] if len(part) > 16}
    assert len(rejected) == len(FORGERIES)
    assert fragments
    assert [fragment for fragment in fragments if fragment in logged] == []


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("signed by another key", auth.BAD_SIGNATURE),
        ("payload changed after signing", auth.BAD_SIGNATURE),
        ("alg none", auth.ALGORITHM_REFUSED),
        ("HS256 with the public key as secret", auth.ALGORITHM_REFUSED),
        ("expired", auth.EXPIRED),
        ("not yet valid", auth.NOT_YET_VALID),
        ("wrong audience", auth.WRONG_AUDIENCE),
        ("wrong issuer", auth.WRONG_ISSUER),
        ("no kid", auth.NO_KEY_ID),
        ("malformed", auth.MALFORMED),
    ],
)
def test_the_refusal_names_the_check_that_failed(tokens: Tokens, kind: str, reason: str) -> None:
    assert str(refused(identity_from_authorization, f"Bearer {tokens.forged(kind)}")) == reason


@pytest.mark.parametrize("role", ["postgres", "supabase_admin", "authenticator", ""])
def test_a_role_the_api_does_not_grant_is_refused(tokens: Tokens, role: str) -> None:
    error = refused(identity_from_authorization, f"Bearer {tokens.token(role=role)}")

    assert str(error) == auth.ROLE_REFUSED
    assert identity_from_authorization(f"Bearer {tokens.token(role='anon')}").role == "anon"


@pytest.mark.parametrize("claim", ["role", "exp"])
def test_a_token_without_a_required_claim_is_refused(tokens: Tokens, claim: str) -> None:
    without: dict[str, Any] = {claim: None}

    error = refused(identity_from_authorization, f"Bearer {tokens.token(**without)}")

    assert isinstance(error, InvalidTokenError)
    assert identity_from_authorization(f"Bearer {tokens.token()}").role == "authenticated"


def test_an_authenticated_token_must_name_its_user(tokens: Tokens) -> None:
    error = refused(identity_from_authorization, f"Bearer {tokens.token(sub=None)}")

    assert str(error) == auth.NO_USER
    assert identity_from_authorization(f"Bearer {tokens.token(role='service_role', sub=None)}")


ALG_A_LIST = "eyJhbGciOlsiRVMyNTYiXSwia2lkIjoieCJ9.e30.eA"
"""The review's token: `{"alg": ["ES256"], "kid": "x"}`, refused before any key is involved."""

WRONG_HEADERS: dict[str, dict[str, Any]] = {
    "alg a list": {"alg": ["ES256"]},
    "alg an object": {"alg": {"ES256": True}},
    "alg null": {"alg": None},
    "alg a number": {"alg": 256},
    "kid a list": {"kid": ["x"]},
    "kid a number": {"kid": 1},
    "kid null": {"kid": None},
    "crit not a list": {"crit": "b64"},
    "b64 false": {"b64": False, "crit": ["b64"]},
}
WRONG_CLAIMS: dict[str, dict[str, Any]] = {
    "exp a numeric string": {"exp": "9999999999"},
    "exp a list": {"exp": [9999999999]},
    "exp true": {"exp": True},
    "exp NaN": {"exp": float("nan")},
    "exp Infinity": {"exp": float("inf")},
    "exp null": {"exp": None},
    "nbf a string": {"nbf": "0"},
    "iat an object": {"iat": {}},
    "role a list": {"role": ["service_role"]},
    "role an object": {"role": {"authenticated": True}},
    "role a number": {"role": 1},
    "role null": {"role": None},
    "iss a list": {"iss": ["issuer"]},
    "aud an object": {"aud": {"authenticated": True}},
    "aud a list of numbers": {"aud": [1]},
    "sub a number": {"sub": 42},
    "sub not a uuid": {"sub": "alice"},
    "sub a uuid without dashes": {"sub": uuid.uuid4().hex},
    "NUL in a claim": {"email": "a\x00b@example.test"},
    "a lone surrogate in a claim": {"user_metadata": {"name": "\ud800"}},
    "claims nested too deep": {"user_metadata": json.loads("[" * 40 + "]" * 40)},
}


def test_the_reviews_token_with_alg_a_list_is_401(tokens: Tokens) -> None:
    error = refused(identity_from_authorization, f"Bearer {ALG_A_LIST}")

    assert isinstance(error, InvalidTokenError)
    assert str(error) == auth.ALGORITHM_REFUSED


@pytest.mark.parametrize("kind", WRONG_HEADERS)
def test_a_signed_token_whose_header_is_wrong_is_401(tokens: Tokens, kind: str) -> None:
    claims = tokens.claims()
    header = tokens.header() | WRONG_HEADERS[kind]

    error = refused(identity_from_authorization, f"Bearer {tokens.signed(header, claims)}")
    genuine = identity_from_authorization(f"Bearer {tokens.signed(tokens.header(), claims)}")

    assert isinstance(error, InvalidTokenError)
    assert error_response(error).status_code == 401
    assert genuine.user_id == claims["sub"]


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("kind", WRONG_CLAIMS)
def test_a_signed_token_whose_claim_is_of_the_wrong_type_is_401(
    tokens: Tokens, kind: str, role: str
) -> None:
    claims = tokens.claims(role=role)
    wrong = claims | WRONG_CLAIMS[kind]

    error = refused(identity_from_authorization, f"Bearer {tokens.signed(tokens.header(), wrong)}")
    genuine = identity_from_authorization(f"Bearer {tokens.signed(tokens.header(), claims)}")

    assert isinstance(error, InvalidTokenError)
    assert error_response(error).status_code == 401
    assert genuine.role == role


@pytest.mark.parametrize("payload", [[], "claims", 1, None, True])
def test_a_signed_payload_that_is_not_an_object_is_401(tokens: Tokens, payload: Any) -> None:
    error = refused(
        identity_from_authorization, f"Bearer {tokens.signed(tokens.header(), payload)}"
    )

    assert str(error) == auth.MALFORMED


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "9999999999"), ("role", ["service_role"]), ("sub", "alice"), ("aud", [1])],
)
def test_the_refusal_names_the_claim_of_the_wrong_type(
    tokens: Tokens, claim: str, value: Any
) -> None:
    token = tokens.signed(tokens.header(), tokens.claims() | {claim: value})

    assert str(refused(identity_from_authorization, f"Bearer {token}")) == (
        f"The access token's {claim} claim is malformed"
    )


def test_user_only_refuses_a_caller_who_names_no_user(tokens: Tokens) -> None:
    anon = identity_from_authorization(f"Bearer {tokens.token(role='anon', sub=None)}")
    anon_with_sub = identity_from_authorization(f"Bearer {tokens.token(role='anon')}")
    nobody = identity_from_authorization(f"Bearer {tokens.token(role='service_role', sub=None)}")
    user = identity_from_authorization(f"Bearer {tokens.token()}")
    service_for_a_user = identity_from_authorization(f"Bearer {tokens.service_role()}")

    errors = [refused(user_only, who) for who in (anon, anon_with_sub, nobody, ANONYMOUS)]

    assert {(type(e), str(e)) for e in errors} == {(ForbiddenError, auth.NEEDS_USER)}
    assert {error_response(e).status_code for e in errors} == {403}
    assert user_only(user) is user
    assert user_only(service_for_a_user) is service_for_a_user


def test_clocks_a_few_seconds_apart_are_tolerated(tokens: Tokens) -> None:
    """The forgeries are past the leeway; these are within it."""
    now = int(time.time())
    just_expired = tokens.token(exp=now - 5)
    just_not_valid = tokens.token(nbf=now + 5)

    assert identity_from_authorization(f"Bearer {just_expired}").role == "authenticated"
    assert identity_from_authorization(f"Bearer {just_not_valid}").role == "authenticated"


def test_only_the_service_role_passes_the_service_role_check(tokens: Tokens) -> None:
    user = identity_from_authorization(f"Bearer {tokens.token()}")
    service = identity_from_authorization(f"Bearer {tokens.service_role()}")

    error = refused(service_role_only, user)

    assert isinstance(error, ForbiddenError)
    assert error_response(error).status_code == 403
    assert error_response(error).body["code"] == "forbidden"
    assert service_role_only(service) is service


# --- the key the token names, and the algorithm the key allows ----------------------------


@pytest.fixture
def rsa_key(fresh_tokens: Tokens) -> rsa.RSAPrivateKey:
    """An RS256 key (Supabase's other asymmetric option) listed in the project's JWKS too."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    fresh_tokens.endpoint.extra_entries.append(jwk | {"kid": "rsa-1", "alg": "RS256"})
    return private_key


def test_each_key_verifies_with_its_own_algorithm_only(
    fresh_tokens: Tokens, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url)
    claims = fresh_tokens.claims()
    rs256 = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    # RS256 naming the EC key's kid, ES256 naming the RSA key's: each key refuses the other alg.
    crossed = [
        jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": fresh_tokens.key.kid}),
        jwt.encode(
            claims, fresh_tokens.key.private_key, algorithm="ES256", headers={"kid": "rsa-1"}
        ),
    ]

    assert verifier.verify(rs256)["sub"] == claims["sub"]
    assert verifier.verify(fresh_tokens.key.sign(claims))["sub"] == claims["sub"]
    for token in crossed:
        assert str(refused(verifier.verify, token)) == auth.ALGORITHM_REFUSED


# --- configuration ------------------------------------------------------------------------


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The environment for `get_verifier`, with its caches forgotten before and after."""
    get_settings.cache_clear()
    get_verifier.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()
    get_verifier.cache_clear()


def test_without_supabase_url_a_token_is_a_generic_500_naming_the_setting(
    settings_env: pytest.MonkeyPatch, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    settings_env.delenv("SUPABASE_URL")

    error = refused(identity_from_authorization, f"Bearer {tokens.token()}")
    response = error_response(error)

    assert isinstance(error, AuthConfigError)
    assert response.status_code == 500
    assert response.body == {"code": "internal_error", "message": "Internal server error"}
    assert [r.setting for r in caplog.records] == ["SUPABASE_URL"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    ["http://project.supabase.co", "ftp://127.0.0.1", "https://", "https://x.co/?a=1", "x"],
)
def test_supabase_url_must_be_https_except_on_loopback(url: str) -> None:
    error = refused(TokenVerifier, url)

    assert isinstance(error, AuthConfigError)
    assert error.setting == "SUPABASE_URL"


def test_the_issuer_is_the_projects_auth_url_whatever_the_trailing_slash() -> None:
    assert TokenVerifier("https://ref.supabase.co/").issuer == "https://ref.supabase.co/auth/v1"
    assert TokenVerifier("http://localhost:54321").jwks_url == (
        "http://localhost:54321/auth/v1/.well-known/jwks.json"
    )
