"""Who a request acts as: a Supabase access token, verified here, becomes an `Identity`.

Supabase Auth signs access tokens with the project's signing keys: asymmetric ones (ES256 by
default, or RS256), whose public halves it publishes at
`{SUPABASE_URL}/auth/v1/.well-known/jwks.json`, or, on older projects, the legacy shared JWT
secret (HS256). Both are accepted (https://supabase.com/docs/guides/auth/signing-keys):

- the token's `alg` only picks where its key comes from, and the key decides the algorithm:
  an asymmetric token is verified with the JWKS key its `kid` names, with that key's own
  algorithm; an HS256 token only with the legacy secret (SUPABASE_JWT_SECRET_ARN), never
  with a public key (the algorithm-confusion attack); `none` and anything else is refused;
- PyJWT then checks the signature, `exp` and `nbf` (with CLOCK_SKEW_S of leeway), `iss` (the
  project's `/auth/v1`) and `aud` (`authenticated`); last, `role` must be one of ROLES, the
  Postgres roles a token may act as, and an `authenticated` token must name its user (`sub`).

Keys are kept per process, so per Lambda instance. The JWKS for JWKS_TTL_S: Supabase's edge
caches it for 10 minutes and asks verifiers not to keep it much longer, or revoking a key would
take that long to reach them. A `kid` missing from the cache triggers one refetch (a rotation),
but at most one fetch per MIN_REFETCH_INTERVAL_S whatever the `kid`s, so a flood of made-up
`kid`s cannot hammer the endpoint; a failed fetch is not retried within that interval either,
and the requests in between answer 503 at once. A fetch waits AUTH_JWKS_TIMEOUT_S at most and
never past the request's deadline (`shared._deadline`). An unreachable JWKS is a 503 with
Retry-After, never a 401: the token may be fine. PyJWT's own PyJWKClient does not fit: its
timeout is fixed per client, not per request; it retries a failed fetch on every request; and
the empty key set of a project still on the legacy secret is an error to it.

Claims are checked for type before their values (`exp`, `nbf`, `iat` numbers; `iss`, `role`
strings; `sub` a user id; `aud` a string or a list of strings; the header's `alg` and `kid`
strings), and must be JSON that Postgres can hold, since they become `request.jwt.claims`:
whatever a token holds, a client gets a 401 naming the check, never a 500.

A token that passed every check is remembered (VERIFIED_TOKENS_KEPT of them per process): a
client sends the same token with every request until it expires, and checking its signature
again costs more (ES256) than the rest of the verification. A remembered
token is trusted no longer than its `exp` (with the leeway) and no longer than the keys it was
checked with: until those keys are JWKS_TTL_S old, counted from when they were loaded, and
only while every reload still lists its `kid`. So a revoked key's tokens are refused from the
first fetch that no longer lists it, at most JWKS_TTL_S after the keys in hand were loaded,
exactly as without the memo.

A configuration error (the legacy secret missing or denied) is a 500 on every request until it
is fixed, never a 503: only unavailability (timeouts, 5xx, throttling) means "retry shortly".

The legacy secret is read from Secrets Manager on the first HS256 token and kept as long as the
JWKS. The stack's placeholder (a JSON object) means it is not set, and HS256 tokens are refused.

No token ever reaches a log line or a response: a rejection logs its reason, nothing else.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache, partial
from typing import IO, Any
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK

from shared._boundary import LambdaEvent, request_header
from shared._deadline import remaining_seconds
from shared._errors import (
    AuthConfigError,
    ConfigurationError,
    ForbiddenError,
    InvalidTokenError,
    NotAuthenticatedError,
    SigningKeysUnavailableError,
)
from shared._identity import ANONYMOUS, Identity
from shared._secrets import read_secret_string
from shared._settings import get_settings

__all__ = [
    "ANONYMOUS",
    "AUDIENCE",
    "ROLES",
    "Identity",
    "NotAuthenticatedError",
    "TokenVerifier",
    "get_verifier",
    "identity_from_authorization",
    "require_identity",
    "require_service_role",
    "service_role_only",
    "user_only",
]

logger = logging.getLogger(__name__)

AUDIENCE = "authenticated"
"""The `aud` Supabase Auth gives every access token it issues."""

ROLES = frozenset({"authenticated", "anon", "service_role"})
"""The Postgres roles a token may act as; any other `role` claim is refused."""

SERVICE_ROLE = "service_role"
CLOCK_SKEW_S = 30
"""Leeway on `exp` and `nbf` for clocks that disagree a little."""

JWKS_TTL_S = 600.0
"""How long fetched keys are trusted before the JWKS is fetched again."""

MIN_REFETCH_INTERVAL_S = 10.0
"""At most one fetch (or secret read) per this many seconds, for unknown `kid`s and failures."""

VERIFIED_TOKENS_KEPT = 256
"""Verified tokens a verifier remembers; the oldest is forgotten first."""

MIN_FETCH_TIMEOUT_S = 0.05
"""With less of the deadline left the JWKS is not fetched at all: the request answers 503."""

MAX_CLAIMS_DEPTH = 32
"""Deeper claims are refused: far beyond any token Supabase issues, and far from the recursion
limits of the JSON encoders and of Postgres's `jsonb`, which the claims go through."""

MAX_JWKS_BYTES = 64 * 1024
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
LEGACY_ALGORITHM = "HS256"
_LEGACY_KEY_ID = "legacy-jwt-secret"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

MALFORMED = "The access token is malformed"
ALGORITHM_REFUSED = "The access token's algorithm is not accepted"
UNKNOWN_KEY = "The access token's signing key is unknown"
NO_KEY_ID = "The access token names no signing key"
EXPIRED = "The access token has expired"
NOT_YET_VALID = "The access token is not valid yet"
BAD_SIGNATURE = "The access token's signature is invalid"
WRONG_ISSUER = "The access token was not issued by this project's Supabase Auth"
WRONG_AUDIENCE = "The access token is not meant for this API"
ROLE_REFUSED = "The access token's role is not accepted"
NO_USER = "The access token names no user"
NEEDS_USER = (
    "This route acts for a user: it needs a user's access token, or a service_role token that"
    " names one (sub)"
)


@dataclass(frozen=True, slots=True)
class _TrustedKey:
    """A verification key, where it came from, and until when it may be trusted (monotonic
    time): its load time plus the keys' TTL."""

    key: PyJWK
    source: str
    kid: str
    trusted_until: float


class _KeyCache:
    """Keys from a slow source (an HTTP fetch, a secret read), safe to share between threads:
    kept for `ttl_s`, loaded again when stale or asked for a key they lack, but at most once
    per `min_reload_interval_s`, failed loads included. Threads that need a load at once share
    one. After each successful load, `on_load(source, kids)` hears which keys it listed."""

    def __init__(
        self,
        source: str,
        load: Callable[[], dict[str, PyJWK]],
        *,
        ttl_s: float,
        min_reload_interval_s: float,
        on_load: Callable[[str, frozenset[str]], None],
    ) -> None:
        self._source = source
        self._load = load
        self._ttl_s = ttl_s
        self._min_reload_interval_s = min_reload_interval_s
        self._on_load = on_load
        self._lock = threading.Lock()
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at = float("-inf")
        self._attempted_at = float("-inf")
        self._failure: Callable[[], Exception] | None = None

    def get(self, kid: str) -> _TrustedKey | None:
        """The key named `kid`, or None; SigningKeysUnavailableError when none can be loaded,
        and the same ConfigurationError as the last load while that load was a mistake."""
        with self._lock:
            now = time.monotonic()
            if now - self._loaded_at < self._ttl_s and kid in self._keys:
                return self._trusted(kid)
            if now - self._attempted_at < self._min_reload_interval_s:
                if self._failure is not None:
                    raise self._failure()
                return self._trusted(kid)  # loaded moments ago, without this kid
            self._attempted_at, self._failure = now, SigningKeysUnavailableError
            try:
                self._keys = self._load()
            except ConfigurationError as exc:
                # A mistake to fix, not an outage: the same 500 until the next attempt, never
                # a 503 telling clients to retry.
                self._failure = partial(type(exc), str(exc), setting=exc.setting)
                raise
            self._loaded_at, self._failure = time.monotonic(), None
            self._on_load(self._source, frozenset(self._keys))
            return self._trusted(kid)

    def _trusted(self, kid: str) -> _TrustedKey | None:
        key = self._keys.get(kid)
        if key is None:
            return None
        return _TrustedKey(key, self._source, kid, self._loaded_at + self._ttl_s)


@dataclass(frozen=True, slots=True)
class _Remembered:
    claims: dict[str, Any]
    key: _TrustedKey


class _VerifiedTokens:
    """Claims of tokens that passed every check, each until its `exp` or until the keys it was
    checked with are stale, and forgotten by the first load that no longer lists its key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remembered: dict[str, _Remembered] = {}
        self._listed: dict[str, frozenset[str]] = {}

    def get(self, token: str) -> dict[str, Any] | None:
        """The claims of `token` if it was verified and is still within every limit."""
        with self._lock:
            remembered = self._remembered.get(token)
        if remembered is None:
            return None
        claims, key = remembered.claims, remembered.key
        if time.monotonic() < key.trusted_until and time.time() < claims["exp"] + CLOCK_SKEW_S:
            return claims
        return None

    def add(self, token: str, claims: dict[str, Any], key: _TrustedKey) -> None:
        """Remember `token`, unless a load since its check has dropped its key."""
        with self._lock:
            if key.kid not in self._listed.get(key.source, frozenset()):
                return
            if len(self._remembered) >= VERIFIED_TOKENS_KEPT:
                del self._remembered[next(iter(self._remembered))]
            self._remembered[token] = _Remembered(claims, key)

    def keys_loaded(self, source: str, kids: frozenset[str]) -> None:
        """Forget the tokens of `source`'s keys that its latest load no longer lists."""
        with self._lock:
            self._listed[source] = kids
            revoked = [
                token
                for token, remembered in self._remembered.items()
                if remembered.key.source == source and remembered.key.kid not in kids
            ]
            for token in revoked:
                del self._remembered[token]


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """The JWKS is fetched from the configured URL only, never from where it points."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


@lru_cache(maxsize=1)
def _opener() -> urllib.request.OpenerDirector:
    """One opener, and so one TLS context (loading the CA bundle is slow), per process."""
    tls = ssl.create_default_context()
    return urllib.request.build_opener(_RefuseRedirects(), urllib.request.HTTPSHandler(context=tls))


def _signing_key(jwk: object) -> PyJWK | None:
    """A JWKS entry as a verification key, or None for what must not or cannot verify tokens:
    keys for another use, symmetric keys (a public set has no business holding one), and
    algorithms PyJWT cannot run."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    try:
        key = PyJWK(jwk)
    except jwt.PyJWTError:
        return None
    return key if key.algorithm_name in ASYMMETRIC_ALGORITHMS else None


def _fetch_jwks(url: str, timeout_s: float) -> dict[str, PyJWK]:
    """The JWKS's signing keys by `kid`, fetched within the request's deadline."""
    remaining = remaining_seconds()
    timeout = timeout_s if remaining is None else min(timeout_s, remaining)
    if timeout < MIN_FETCH_TIMEOUT_S:
        logger.warning("JWKS not fetched: the request's deadline has passed")
        raise SigningKeysUnavailableError()
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _opener().open(request, timeout=timeout) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, 4xx/5xx, TLS
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()
        logger.warning(
            "JWKS unreachable",
            extra={"error": type(exc).__name__, "status": getattr(exc, "code", None)},
        )
        raise SigningKeysUnavailableError() from None
    try:
        document = json.loads(body) if len(body) <= MAX_JWKS_BYTES else None
    except ValueError:
        document = None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        logger.warning("JWKS malformed")
        raise SigningKeysUnavailableError()
    keys = {jwk["kid"]: key for jwk in entries if (key := _signing_key(jwk)) is not None}
    logger.info("JWKS fetched", extra={"keys": len(keys)})
    return keys


def _read_legacy_secret(secret_id: str) -> dict[str, PyJWK]:
    """The legacy JWT secret as an HS256 key; none while the secret holds the placeholder."""
    value = read_secret_string(
        secret_id,
        "legacy JWT secret",
        not_readable=partial(AuthConfigError, setting="SUPABASE_JWT_SECRET_ARN"),
        unavailable=SigningKeysUnavailableError,
    ).strip()
    if value.startswith("{"):  # the stack's placeholder: `make secret SECRET=jwt` has not run
        logger.info("legacy JWT secret not set")
        return {}
    # Supabase signs with the secret's text as the HMAC key, as is.
    encoded = base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode()
    return {_LEGACY_KEY_ID: PyJWK({"kty": "oct", "k": encoded}, LEGACY_ALGORITHM)}


def _project_url(url: str) -> str:
    """SUPABASE_URL without a trailing slash; https only, but http on loopback (local stack)."""
    parts = urlsplit(url.strip().rstrip("/"))
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    if not (secure and parts.hostname) or parts.query or parts.fragment:
        raise AuthConfigError(
            "SUPABASE_URL must be the project's https:// URL (http:// only on loopback)",
            setting="SUPABASE_URL",
        )
    return parts.geturl()


class _MalformedClaimError(jwt.DecodeError):
    """A claim of the wrong type or form: `claim` names it."""

    def __init__(self, claim: str) -> None:
        super().__init__(f"the {claim} claim is malformed")
        self.claim = claim


def _is_number(value: object) -> bool:
    """A JSON number, as RFC 7519's NumericDate is: not a bool, a string of digits, nor NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_audience(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    )


def _is_user_id(value: object) -> bool:
    """A UUID in its canonical form, as Supabase Auth's user ids and `auth.uid()` are."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


_CLAIM_CHECKS: dict[str, Callable[[object], bool]] = {
    "exp": _is_number,
    "nbf": _is_number,
    "iat": _is_number,
    "iss": lambda value: isinstance(value, str),
    "aud": _is_audience,
    "role": lambda value: isinstance(value, str),
    "sub": _is_user_id,
}
"""Each claim the verifier or the database reads, and what it must be when present."""


def _is_storable_text(text: str) -> bool:
    """Text Postgres accepts: valid UTF-8 (no lone surrogate) without NUL."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _is_storable_scalar(value: object) -> bool:
    if isinstance(value, str):
        return _is_storable_text(value)
    return not (isinstance(value, float) and not math.isfinite(value))


def _storable(claims: dict[str, Any]) -> bool:
    """Whether Postgres can hold the claims as `jsonb`, as `request.jwt.claims` must: no NaN or
    infinity, no NUL or lone surrogate in any text, no deeper than MAX_CLAIMS_DEPTH. Walked
    without recursion, so no nesting can exhaust the stack."""
    pending: list[tuple[object, int]] = [(claims, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_CLAIMS_DEPTH:
                return False
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
        elif not _is_storable_scalar(value):
            return False
    return True


class _SupabaseJWT(jwt.PyJWT):
    """PyJWT, refusing claims of the wrong type before it compares their values.

    `_decode_payload` is PyJWT's hook for subclasses; it runs after the signature is verified
    and before any claim is validated, so a claim of the wrong type never reaches a comparison.
    """

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        claims = super()._decode_payload(decoded)
        for name, check in _CLAIM_CHECKS.items():
            if name in claims and not check(claims[name]):
                raise _MalformedClaimError(name)
        if not _storable(claims):
            raise jwt.DecodeError("the claims cannot be stored as jsonb")
        return claims


_JWT = _SupabaseJWT()

_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, EXPIRED),
    (jwt.ImmatureSignatureError, NOT_YET_VALID),
    (jwt.InvalidAudienceError, WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, WRONG_ISSUER),
    (jwt.InvalidSignatureError, BAD_SIGNATURE),
    (jwt.InvalidKeyError, BAD_SIGNATURE),
    (jwt.InvalidAlgorithmError, ALGORITHM_REFUSED),
)
_MISSING_CLAIM_REASONS = {"aud": WRONG_AUDIENCE, "iss": WRONG_ISSUER, "role": ROLE_REFUSED}


def _reason(exc: jwt.PyJWTError) -> str:
    """What failed, in our words: PyJWT's messages are not written for clients."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _MISSING_CLAIM_REASONS.get(exc.claim, f"The access token has no {exc.claim} claim")
    if isinstance(exc, _MalformedClaimError):
        return f"The access token's {exc.claim} claim is malformed"
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), MALFORMED)


class TokenVerifier:
    """Verifies the access tokens of one Supabase project and keeps its keys."""

    def __init__(
        self,
        supabase_url: str,
        *,
        legacy_secret_id: str | None = None,
        jwks_timeout_s: float = 2.0,
        keys_ttl_s: float = JWKS_TTL_S,
        min_refetch_interval_s: float = MIN_REFETCH_INTERVAL_S,
    ) -> None:
        self.issuer = f"{_project_url(supabase_url)}/auth/v1"
        self.jwks_url = f"{self.issuer}/.well-known/jwks.json"
        self._verified = _VerifiedTokens()
        limits = {"ttl_s": keys_ttl_s, "min_reload_interval_s": min_refetch_interval_s}
        self._jwks = _KeyCache(
            "jwks",
            partial(_fetch_jwks, self.jwks_url, jwks_timeout_s),
            on_load=self._verified.keys_loaded,
            **limits,
        )
        self._legacy = (
            _KeyCache(
                "legacy",
                partial(_read_legacy_secret, legacy_secret_id),
                on_load=self._verified.keys_loaded,
                **limits,
            )
            if legacy_secret_id
            else None
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once every check passed; InvalidTokenError names the one that
        failed, SigningKeysUnavailableError when the keys cannot be read."""
        if (remembered := self._verified.get(token)) is not None:
            return remembered
        key = self._key_for(token)
        claims = self._check(token, key.key)
        self._verified.add(token, claims, key)
        return claims

    def _check(self, token: str, key: PyJWK) -> dict[str, Any]:
        """Every check, with the key the token's header names."""
        try:
            claims = _JWT.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "iss", "aud", "role"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(_reason(exc)) from None
        if claims["role"] not in ROLES:
            raise InvalidTokenError(ROLE_REFUSED)
        if claims["role"] == "authenticated" and not isinstance(claims.get("sub"), str):
            raise InvalidTokenError(NO_USER)
        return claims

    def _key_for(self, token: str) -> _TrustedKey:
        """The one key that may verify this token, chosen by its header's `alg` and `kid`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError(MALFORMED) from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise InvalidTokenError(ALGORITHM_REFUSED)
        if algorithm == LEGACY_ALGORITHM:
            key = self._legacy.get(_LEGACY_KEY_ID) if self._legacy else None
            if key is None:
                raise InvalidTokenError(ALGORITHM_REFUSED)
            return key
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise InvalidTokenError(ALGORITHM_REFUSED)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidTokenError(NO_KEY_ID)
        key = self._jwks.get(kid)
        if key is None:
            raise InvalidTokenError(UNKNOWN_KEY)
        return key


@lru_cache(maxsize=1)
def get_verifier() -> TokenVerifier:
    """The process's verifier, from the settings; tests call `get_verifier.cache_clear()`."""
    settings = get_settings()
    if not settings.supabase_url:
        raise AuthConfigError("Set SUPABASE_URL to verify access tokens", setting="SUPABASE_URL")
    return TokenVerifier(
        settings.supabase_url,
        legacy_secret_id=settings.supabase_jwt_secret_arn,
        jwks_timeout_s=settings.auth_jwks_timeout_s,
    )


def identity_from_authorization(header: str | None) -> Identity:
    """The identity an `Authorization: Bearer <token>` header proves.

    NotAuthenticatedError (401) without a Bearer token, InvalidTokenError (401) for a token that
    fails a check, SigningKeysUnavailableError (503) when the keys cannot be read in time.
    """
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise NotAuthenticatedError("A Supabase access token is required (Authorization: Bearer)")
    try:
        claims = get_verifier().verify(token.strip())
    except InvalidTokenError as exc:
        logger.info("access token rejected", extra={"reason": str(exc)})
        raise
    return Identity(claims["role"], claims)


def service_role_only(identity: Identity) -> Identity:
    """The identity if it is the service role; a 403 for any other verified caller."""
    if identity.role != SERVICE_ROLE:
        raise ForbiddenError("This route requires a service_role token")
    return identity


def user_only(identity: Identity) -> Identity:
    """The identity if it acts for a user: a user's token, or a service_role token that names
    one (`sub`); a 403 for anon, and for a service_role token that names nobody."""
    if identity.role == "anon" or identity.user_id is None:
        raise ForbiddenError(NEEDS_USER)
    return identity


def require_identity(event: LambdaEvent) -> Identity:
    """For plain handlers: the verified caller of an HTTP event, or a 401."""
    return identity_from_authorization(request_header(event, "authorization"))


def require_service_role(event: LambdaEvent) -> Identity:
    """For plain handlers: the caller of an HTTP event, who must hold a service_role token."""
    return service_role_only(require_identity(event))


# Deployed functions load the CA bundle while Lambda initialises them, not on the first fetch.
if os.environ.get("SUPABASE_URL", "").startswith("https://"):
    _opener()
