"""Where the keys that verify access tokens come from, and how long they and the tokens they
verified are trusted.

Supabase Auth publishes its signing keys' public halves at `{SUPABASE_URL}/auth/v1/.well-known/
jwks.json`; older projects sign with a legacy shared secret (HS256), read here from Secrets
Manager (https://supabase.com/docs/guides/auth/signing-keys). Keys are kept per process for
JWKS_TTL_S, as Supabase asks, so revoking a key reaches every instance in that time; an unknown
`kid` triggers at most one fetch per MIN_REFETCH_INTERVAL_S, so made-up `kid`s cannot hammer the
endpoint. A fetch never outlasts the request's deadline, and an unreachable JWKS is a 503, never
a 401. PyJWT's PyJWKClient does neither. A verified token is remembered until its `exp` and no
longer than the keys it was checked with: re-checking an ES256 signature costs more than the rest.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache, partial
from typing import IO, Any

import jwt
from jwt import PyJWK

from shared._deadline import remaining_seconds
from shared._errors import AuthConfigError, ConfigurationError, SigningKeysUnavailableError
from shared._secrets import read_secret_string

logger = logging.getLogger(__name__)

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
LEGACY_KEY_ID = "legacy-jwt-secret"


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A verification key, where it came from, and until when it may be trusted (monotonic
    time): its load time plus the keys' TTL."""

    key: PyJWK
    source: str
    kid: str
    trusted_until: float


class KeyCache:
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

    def get(self, kid: str) -> TrustedKey | None:
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

    def _trusted(self, kid: str) -> TrustedKey | None:
        key = self._keys.get(kid)
        if key is None:
            return None
        return TrustedKey(key, self._source, kid, self._loaded_at + self._ttl_s)


@dataclass(frozen=True, slots=True)
class _Remembered:
    claims: dict[str, Any]
    key: TrustedKey


class VerifiedTokens:
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

    def add(self, token: str, claims: dict[str, Any], key: TrustedKey) -> None:
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
def tls_opener() -> urllib.request.OpenerDirector:
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


def fetch_jwks(url: str, timeout_s: float) -> dict[str, PyJWK]:
    """The JWKS's signing keys by `kid`, fetched within the request's deadline."""
    remaining = remaining_seconds()
    timeout = timeout_s if remaining is None else min(timeout_s, remaining)
    if timeout < MIN_FETCH_TIMEOUT_S:
        logger.warning("JWKS not fetched: the request's deadline has passed")
        raise SigningKeysUnavailableError()
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with tls_opener().open(request, timeout=timeout) as response:
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


def read_legacy_secret(secret_id: str) -> dict[str, PyJWK]:
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
    return {LEGACY_KEY_ID: PyJWK({"kty": "oct", "k": encoded}, LEGACY_ALGORITHM)}


def prepare_fetches() -> None:
    """Build the TLS opener while Lambda initialises a deployed function (loading the CA bundle
    is slow), not on the first JWKS fetch. Called when a handler is wrapped."""
    if os.environ.get("SUPABASE_URL", "").startswith("https://"):
        tls_opener()
