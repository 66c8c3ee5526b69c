"""Who a request acts as: a Supabase access token, verified here, becomes an `Identity`.

The token's `alg` only picks where its key comes from (`shared._signing_keys`), and the key
decides the algorithm, so a public key never verifies an HS256 token (algorithm confusion).
Then PyJWT checks the signature, `exp`/`nbf` (with leeway), `iss` and `aud`; `role` must be one
of the API roles and an `authenticated` token must name its user. Claims are type-checked before
their values are compared and must be JSON that Postgres can hold, since they become
`request.jwt.claims`: whatever a token holds, the client gets a 401 naming the check, never a
500. No token ever reaches a log line or a response.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK

from shared._boundary import LambdaEvent, request_header
from shared._errors import AuthConfigError, ForbiddenError, InvalidTokenError, NotAuthenticatedError
from shared._identity import ROLES, Identity
from shared._settings import LOOPBACK_HOSTS, get_settings
from shared._signing_keys import (
    ASYMMETRIC_ALGORITHMS,
    CLOCK_SKEW_S,
    JWKS_TTL_S,
    LEGACY_ALGORITHM,
    LEGACY_KEY_ID,
    MIN_REFETCH_INTERVAL_S,
    KeyCache,
    TrustedKey,
    VerifiedTokens,
    fetch_jwks,
    read_legacy_secret,
)

logger = logging.getLogger(__name__)

AUDIENCE = "authenticated"
"""The `aud` Supabase Auth gives every access token it issues."""

SERVICE_ROLE = "service_role"
MAX_CLAIMS_DEPTH = 32
"""Deeper claims are refused: far beyond any token Supabase issues, and far from the recursion
limits of the JSON encoders and of Postgres's `jsonb`, which the claims go through."""


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


def _project_url(url: str) -> str:
    """SUPABASE_URL without a trailing slash; https only, but http on loopback (local stack)."""
    parts = urlsplit(url.strip().rstrip("/"))
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    )
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

# Each refusal in our words (PyJWT's messages are not written for clients) and its reason for
# the TokenRefused metric (`shared._metrics.REASONS`).
_REASONS: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
    (jwt.ExpiredSignatureError, EXPIRED, "expired"),
    (jwt.ImmatureSignatureError, NOT_YET_VALID, "not_yet_valid"),
    (jwt.InvalidAudienceError, WRONG_AUDIENCE, "wrong_audience"),
    (jwt.InvalidIssuerError, WRONG_ISSUER, "wrong_issuer"),
    (jwt.InvalidSignatureError, BAD_SIGNATURE, "bad_signature"),
    (jwt.InvalidKeyError, BAD_SIGNATURE, "bad_signature"),
    (jwt.InvalidAlgorithmError, ALGORITHM_REFUSED, "algorithm_refused"),
)
_MISSING_CLAIM_REASONS = {
    "aud": (WRONG_AUDIENCE, "wrong_audience"),
    "iss": (WRONG_ISSUER, "wrong_issuer"),
    "role": (ROLE_REFUSED, "role_refused"),
}


def _refusal(exc: jwt.PyJWTError) -> InvalidTokenError:
    """What failed, in our words, with the reason the metrics count it under."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        missing = (f"The access token has no {exc.claim} claim", "malformed")
        message, reason = _MISSING_CLAIM_REASONS.get(exc.claim, missing)
        return InvalidTokenError(message, reason=reason)
    if isinstance(exc, _MalformedClaimError):
        return InvalidTokenError(
            f"The access token's {exc.claim} claim is malformed", reason="malformed"
        )
    message, reason = next(
        ((message, reason) for kind, message, reason in _REASONS if isinstance(exc, kind)),
        (MALFORMED, "malformed"),
    )
    return InvalidTokenError(message, reason=reason)


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
        self._verified = VerifiedTokens()
        limits = {"ttl_s": keys_ttl_s, "min_reload_interval_s": min_refetch_interval_s}
        self._jwks = KeyCache(
            "jwks",
            partial(fetch_jwks, self.jwks_url, jwks_timeout_s),
            on_load=self._verified.keys_loaded,
            **limits,
        )
        self._legacy = (
            KeyCache(
                "legacy",
                partial(read_legacy_secret, legacy_secret_id),
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
            raise _refusal(exc) from None
        if claims["role"] not in ROLES:
            raise InvalidTokenError(ROLE_REFUSED, reason="role_refused")
        if claims["role"] == "authenticated" and not isinstance(claims.get("sub"), str):
            raise InvalidTokenError(NO_USER, reason="no_user")
        return claims

    def _key_for(self, token: str) -> TrustedKey:
        """The one key that may verify this token, chosen by its header's `alg` and `kid`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError(MALFORMED, reason="malformed") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise InvalidTokenError(ALGORITHM_REFUSED, reason="algorithm_refused")
        if algorithm == LEGACY_ALGORITHM:
            key = self._legacy.get(LEGACY_KEY_ID) if self._legacy else None
            if key is None:
                raise InvalidTokenError(ALGORITHM_REFUSED, reason="algorithm_refused")
            return key
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise InvalidTokenError(ALGORITHM_REFUSED, reason="algorithm_refused")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidTokenError(NO_KEY_ID, reason="no_key_id")
        key = self._jwks.get(kid)
        if key is None:
            raise InvalidTokenError(UNKNOWN_KEY, reason="unknown_key")
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
