"""Access token verification against a real JWKS served over loopback HTTP; no database.

Each refusal is paired with the same call carrying a genuine token, which must pass: a check
that were skipped would fail the pair. The key cache is observed from the JWKS server's side,
by counting the fetches it answered.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from infra.local_auth import SigningKey
from shared import _signing_keys as signing_keys
from shared import _tokens as auth
from shared._deadline import invocation_deadline
from shared._error_mapping import RETRY_AFTER_SECONDS, error_response
from shared._errors import (
    AppError,
    AuthConfigError,
    ForbiddenError,
    InvalidTokenError,
    NotAuthenticatedError,
    SigningKeysUnavailableError,
)
from shared._identity import ANONYMOUS, ROLES
from shared._settings import get_settings
from shared._signing_keys import MIN_FETCH_TIMEOUT_S
from shared._tokens import (
    TokenVerifier,
    get_verifier,
    identity_from_authorization,
    service_role_only,
    user_only,
)
from tests.fixtures.tokens import FORGERIES, Tokens, sign_hs256

LEGACY_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
QUICK_REFETCH_S = 0.3


def refused(call: Any, *args: Any) -> AppError:
    """The application error `call(*args)` raises; fails the test if it returns."""
    with pytest.raises(AppError) as caught:
        call(*args)
    return caught.value


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def test_a_symmetric_key_published_in_the_jwks_is_never_used(fresh_tokens: Tokens) -> None:
    secret = b"k" * 32
    fresh_tokens.endpoint.extra_entries.append(
        {
            "kty": "oct",
            "kid": "shared",
            "alg": "HS256",
            "k": jwt.utils.base64url_encode(secret).decode(),
        }
    )
    verifier = TokenVerifier(fresh_tokens.supabase_url)
    token = sign_hs256(fresh_tokens.claims(), secret, {"kid": "shared"})

    assert str(refused(verifier.verify, token)) == auth.ALGORITHM_REFUSED
    assert verifier.verify(fresh_tokens.token())["role"] == "authenticated"


# --- the key cache ------------------------------------------------------------------------


def test_keys_are_fetched_once_for_many_tokens(fresh_tokens: Tokens) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url)

    for _ in range(5):
        verifier.verify(fresh_tokens.token())

    assert fresh_tokens.endpoint.fetches == 1


def test_an_unknown_kid_fetches_once_and_finds_a_rotated_key(fresh_tokens: Tokens) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url, min_refetch_interval_s=QUICK_REFETCH_S)
    verifier.verify(fresh_tokens.token())
    rotated = SigningKey.generate()
    fresh_tokens.endpoint.keys.append(rotated)
    time.sleep(QUICK_REFETCH_S)

    claims = verifier.verify(rotated.sign(fresh_tokens.claims()))

    assert claims["role"] == "authenticated"
    assert fresh_tokens.endpoint.fetches == 2


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(fresh_tokens: Tokens) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url, min_refetch_interval_s=QUICK_REFETCH_S)
    verifier.verify(fresh_tokens.token())
    time.sleep(QUICK_REFETCH_S)

    for _ in range(50):
        refused(verifier.verify, fresh_tokens.forged("unknown kid"))
    fetches_during_the_flood = fresh_tokens.endpoint.fetches
    time.sleep(QUICK_REFETCH_S)
    refused(verifier.verify, fresh_tokens.forged("unknown kid"))

    assert fetches_during_the_flood == 2  # the first fetch, then one for the whole flood
    assert fresh_tokens.endpoint.fetches == 3  # the interval passed: one more
    assert verifier.verify(fresh_tokens.token())["role"] == "authenticated"  # no fetch needed
    assert fresh_tokens.endpoint.fetches == 3


def test_keys_expire_and_a_removed_key_is_refused_then(fresh_tokens: Tokens) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url, keys_ttl_s=0.2, min_refetch_interval_s=0)
    token = fresh_tokens.token()
    verifier.verify(token)
    fresh_tokens.endpoint.keys.clear()  # revoked in the dashboard

    still_trusted = verifier.verify(token)  # within the TTL, from the cache
    time.sleep(0.25)
    error = refused(verifier.verify, token)

    assert still_trusted["role"] == "authenticated"
    assert str(error) == auth.UNKNOWN_KEY
    assert fresh_tokens.endpoint.fetches == 2


# --- verified tokens remembered -------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature and claims PyJWT checked, in order."""
    checked: list[str] = []
    original = auth._JWT.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        checked.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(auth._JWT, "decode", counting_decode)
    return checked


def test_a_token_seen_before_is_not_checked_again(tokens: Tokens, decodes: list[str]) -> None:
    verifier = TokenVerifier(tokens.supabase_url)
    token, other = tokens.token(), tokens.token()

    claims = [verifier.verify(token) for _ in range(3)]
    verifier.verify(other)

    assert decodes == [token, other]
    assert claims[0] == claims[2] == jwt.decode(token, options={"verify_signature": False})


def test_a_remembered_token_still_expires(
    tokens: Tokens, monkeypatch: pytest.MonkeyPatch, decodes: list[str]
) -> None:
    monkeypatch.setattr(auth, "CLOCK_SKEW_S", 0)
    monkeypatch.setattr(signing_keys, "CLOCK_SKEW_S", 0)
    verifier = TokenVerifier(tokens.supabase_url)
    expires = int(time.time()) + 1
    token = tokens.token(exp=expires)
    verifier.verify(token)

    time.sleep(max(0.0, expires - time.time()) + 0.05)
    error = refused(verifier.verify, token)

    assert str(error) == auth.EXPIRED
    assert decodes == [token, token]


def test_the_oldest_remembered_token_is_forgotten_first(
    tokens: Tokens, monkeypatch: pytest.MonkeyPatch, decodes: list[str]
) -> None:
    monkeypatch.setattr(signing_keys, "VERIFIED_TOKENS_KEPT", 2)
    verifier = TokenVerifier(tokens.supabase_url)
    first, second, third = tokens.token(), tokens.token(), tokens.token()

    for token in (first, second, third, third, second, first):
        verifier.verify(token)

    assert decodes == [first, second, third, first]


def test_a_remembered_token_is_refused_from_the_refetch_that_drops_its_key(
    fresh_tokens: Tokens,
) -> None:
    """Keys trusted for an hour: only the refetch an unknown `kid` triggers can tell that the
    key is gone, and from that fetch on its remembered tokens are refused."""
    verifier = TokenVerifier(fresh_tokens.supabase_url, keys_ttl_s=3600, min_refetch_interval_s=0)
    token = fresh_tokens.token()
    remembered = verifier.verify(token)
    rotated = SigningKey.generate()
    fresh_tokens.endpoint.keys[:] = [rotated]  # the key revoked, a new one in its place

    new_key_token = verifier.verify(rotated.sign(fresh_tokens.claims()))  # the refetch
    error = refused(verifier.verify, token)

    assert remembered["role"] == new_key_token["role"] == "authenticated"
    assert str(error) == auth.UNKNOWN_KEY


def test_a_refetch_that_still_lists_the_key_keeps_its_tokens_remembered(
    fresh_tokens: Tokens, decodes: list[str]
) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url, min_refetch_interval_s=0)
    token = fresh_tokens.token()
    verifier.verify(token)

    refused(verifier.verify, fresh_tokens.forged("unknown kid"))  # a refetch, the same keys
    verifier.verify(token)

    assert fresh_tokens.endpoint.fetches == 2
    assert decodes == [token]


def test_a_token_first_seen_late_is_remembered_only_while_its_keys_are_fresh(
    fresh_tokens: Tokens,
) -> None:
    """The memo counts from when the keys were loaded, not from when the token was first seen:
    a key revoked meanwhile is refused once the keys are stale, as without the memo."""
    keys_ttl_s = 1.5
    verifier = TokenVerifier(
        fresh_tokens.supabase_url, keys_ttl_s=keys_ttl_s, min_refetch_interval_s=0
    )
    verifier.verify(fresh_tokens.token())  # loads the keys
    loaded = time.monotonic()
    time.sleep(keys_ttl_s * 2 / 3)
    token = fresh_tokens.token()
    first_seen = verifier.verify(token)  # late in the keys' life, with the same keys
    fetches_when_first_seen = fresh_tokens.endpoint.fetches
    fresh_tokens.endpoint.keys.clear()  # revoked in the dashboard

    time.sleep(max(0.0, loaded + keys_ttl_s + 0.1 - time.monotonic()))  # the keys are stale
    error = refused(verifier.verify, token)

    assert first_seen["role"] == "authenticated"
    assert fetches_when_first_seen == 1
    assert str(error) == auth.UNKNOWN_KEY
    assert fresh_tokens.endpoint.fetches == 2


# --- when the JWKS cannot be read: 503, within the deadline -------------------------------


def test_an_unreachable_jwks_is_503_with_retry_after_not_401() -> None:
    verifier = TokenVerifier(f"http://127.0.0.1:{closed_port()}")
    token = SigningKey.generate().sign({"sub": "x"})
    hs512 = jwt.encode({"sub": "x"}, "k" * 64, "HS512")  # refused before any key is needed

    error = refused(verifier.verify, token)
    response = error_response(error)

    assert isinstance(error, SigningKeysUnavailableError)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "WWW-Authenticate" not in response.headers
    assert str(refused(verifier.verify, hs512)) == auth.ALGORITHM_REFUSED


def test_a_failed_fetch_is_not_retried_within_the_interval(fresh_tokens: Tokens) -> None:
    verifier = TokenVerifier(
        fresh_tokens.supabase_url, jwks_timeout_s=0.3, min_refetch_interval_s=5
    )
    fresh_tokens.endpoint.delay_s = 2  # slower than the timeout
    token = fresh_tokens.token()

    first = refused(verifier.verify, token)
    started = time.monotonic()
    second = refused(verifier.verify, token)
    second_took = time.monotonic() - started

    assert isinstance(first, SigningKeysUnavailableError)
    assert isinstance(second, SigningKeysUnavailableError)
    assert second_took < 0.05  # answered at once, no second attempt
    assert fresh_tokens.endpoint.fetches == 1


def test_a_stalled_jwks_is_cut_at_the_deadline(fresh_tokens: Tokens) -> None:
    fresh_tokens.endpoint.delay_s = 5
    verifier = TokenVerifier(fresh_tokens.supabase_url, jwks_timeout_s=3)
    token = fresh_tokens.token()

    started = time.monotonic()
    with invocation_deadline(0.4):
        error = refused(verifier.verify, token)
    took = time.monotonic() - started

    assert isinstance(error, SigningKeysUnavailableError)
    assert 0.35 < took < 0.9


def test_control_without_a_deadline_the_fetch_waits_its_own_timeout(
    fresh_tokens: Tokens,
) -> None:
    """What the deadline changed above: the same stall waits the whole JWKS timeout."""
    fresh_tokens.endpoint.delay_s = 5
    verifier = TokenVerifier(fresh_tokens.supabase_url, jwks_timeout_s=1.0)

    started = time.monotonic()
    refused(verifier.verify, fresh_tokens.token())

    assert time.monotonic() - started >= 1.0


def test_with_no_time_left_the_jwks_is_not_fetched(fresh_tokens: Tokens) -> None:
    verifier = TokenVerifier(fresh_tokens.supabase_url)

    with invocation_deadline(MIN_FETCH_TIMEOUT_S / 2):
        error = refused(verifier.verify, fresh_tokens.token())

    assert isinstance(error, SigningKeysUnavailableError)
    assert fresh_tokens.endpoint.fetches == 0


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


# --- the legacy JWT secret (HS256), from Secrets Manager ----------------------------------


def legacy_secret(value: str) -> str:
    """A secret in moto's Secrets Manager; its ARN."""
    arn: str = boto3.client("secretsmanager").create_secret(
        Name=f"jwt-{uuid.uuid4().hex}", SecretString=value
    )["ARN"]
    return arn


def hs256(tokens: Tokens, secret: str, **changes: Any) -> str:
    return jwt.encode(tokens.claims(**changes), secret, algorithm="HS256")


def test_legacy_tokens_verify_with_the_secret_read_once(aws: None, tokens: Tokens) -> None:
    arn = legacy_secret(LEGACY_SECRET)
    verifier = TokenVerifier(tokens.supabase_url, legacy_secret_id=arn)
    user_id = str(uuid.uuid4())

    claims = [verifier.verify(hs256(tokens, LEGACY_SECRET, sub=user_id)) for _ in range(3)]
    boto3.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    after_deletion = verifier.verify(hs256(tokens, LEGACY_SECRET))  # kept, not read again

    assert {c["sub"] for c in claims} == {user_id}
    assert after_deletion["role"] == "authenticated"
    assert verifier.verify(tokens.token())["role"] == "authenticated"  # JWKS tokens too


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: hs256(t, "another-secret-of-at-least-32-characters!"),
        lambda t: t.forged("HS256 with the public key as secret"),
        lambda t: hs256(t, LEGACY_SECRET, iss="https://attacker.supabase.co/auth/v1"),
        lambda t: hs256(t, LEGACY_SECRET, aud="another-api"),
    ],
    ids=["another secret", "public key as secret", "wrong issuer", "wrong audience"],
)
def test_legacy_tokens_are_checked_like_the_others(aws: None, tokens: Tokens, forge: Any) -> None:
    verifier = TokenVerifier(tokens.supabase_url, legacy_secret_id=legacy_secret(LEGACY_SECRET))

    assert isinstance(refused(verifier.verify, forge(tokens)), InvalidTokenError)
    assert verifier.verify(hs256(tokens, LEGACY_SECRET))["role"] == "authenticated"


def test_the_stacks_placeholder_means_hs256_is_refused(aws: None, tokens: Tokens) -> None:
    placeholder = json.dumps({"not_set": "run make secret", "placeholder": "Abc123"})
    verifier = TokenVerifier(tokens.supabase_url, legacy_secret_id=legacy_secret(placeholder))

    error = refused(verifier.verify, hs256(tokens, placeholder))

    assert str(error) == auth.ALGORITHM_REFUSED
    assert verifier.verify(tokens.token())["role"] == "authenticated"


def test_an_unreadable_legacy_secret_is_a_500_naming_the_setting(aws: None, tokens: Tokens) -> None:
    arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:missing-AbCdEf"
    verifier = TokenVerifier(tokens.supabase_url, legacy_secret_id=arn)

    error = refused(verifier.verify, hs256(tokens, LEGACY_SECRET))

    assert isinstance(error, AuthConfigError)
    assert error.setting == "SUPABASE_JWT_SECRET_ARN"
    assert error_response(error).status_code == 500


def test_without_a_legacy_secret_hs256_is_refused_without_asking_aws(tokens: Tokens) -> None:
    """No moto here: a Secrets Manager call would fail with no region and no credentials."""
    verifier = TokenVerifier(tokens.supabase_url)

    assert str(refused(verifier.verify, hs256(tokens, LEGACY_SECRET))) == auth.ALGORITHM_REFUSED
