"""Where the keys that verify access tokens come from and how long they, and the tokens they
verified, are trusted: the JWKS and the legacy secret, over loopback HTTP and moto; no database.

The key cache is observed from the JWKS server's side, by counting the fetches it answered.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import boto3
import jwt
import pytest

from infra.local_auth import SigningKey
from shared import _signing_keys as signing_keys
from shared import _tokens as auth
from shared._deadline import invocation_deadline
from shared._error_mapping import RETRY_AFTER_SECONDS, error_response
from shared._errors import (
    AuthConfigError,
    InvalidTokenError,
    SigningKeysUnavailableError,
)
from shared._signing_keys import MIN_FETCH_TIMEOUT_S
from shared._tokens import (
    TokenVerifier,
)
from tests.fixtures.tokens import Tokens, sign_hs256
from tests.unit.test_tokens import refused

LEGACY_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
QUICK_REFETCH_S = 0.3


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- which keys the JWKS may hold ------------------------------------------------------


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
