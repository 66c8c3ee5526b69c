"""The errors the platform and its functions raise; `shared._error_mapping` turns them into
responses. Importing them costs no driver: plain and FastAPI functions alike raise them.

    AppError                          500
    ├── NotAuthenticatedError         401 + WWW-Authenticate: Bearer
    │   └── InvalidTokenError             ... error="invalid_token"
    ├── ForbiddenError                403
    ├── NotFoundError                 404
    ├── ConflictError                 409
    ├── ConfigurationError            500, logged with the setting that is wrong
    │   ├── DatabaseConfigError
    │   └── AuthConfigError
    └── ServiceUnavailableError       503 + Retry-After
        ├── DatabaseSecretNotSetError
        ├── DatabaseUnavailableError
        ├── SigningKeysUnavailableError
        └── DeadlineExceededError         (shared._deadline)
"""

from __future__ import annotations


class AppError(Exception):
    """Base of the errors this application raises on purpose."""

    status_code = 500
    code = "internal_error"

    @property
    def headers(self) -> dict[str, str]:
        """Headers the response to this error carries (Retry-After is added for every 503)."""
        return {}


class NotAuthenticatedError(AppError):
    """No access token (or not a Bearer one): RFC 6750 asks for a bare `Bearer` challenge."""

    status_code = 401
    code = "not_authenticated"
    reason = "missing"
    """Why the token was refused, for the TokenRefused metric (`shared._metrics.REASONS`)."""

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class InvalidTokenError(NotAuthenticatedError):
    """An access token that fails verification; the message says which check, never the token,
    and `reason` names the check for the metrics."""

    code = "invalid_token"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def headers(self) -> dict[str, str]:
        # The message is ours (no quotes, no token), so it may go into the challenge as is.
        return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{self}"'}


class ForbiddenError(AppError):
    """A verified caller who may not do this."""

    status_code = 403
    code = "forbidden"


class NotFoundError(AppError):
    """The requested resource does not exist."""

    status_code = 404
    code = "not_found"


class ConflictError(AppError):
    """The request conflicts with data already stored."""

    status_code = 409
    code = "conflict"


class ConfigurationError(AppError):
    """A setting or secret is missing or malformed: a mistake to fix, not an outage.

    The client gets a generic 500; the log names `setting` (e.g. "DATABASE_URL") and the
    message, which must say what is wrong without ever quoting the value.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DatabaseConfigError(ConfigurationError):
    """The database URL or secret is missing or malformed."""


class AuthConfigError(ConfigurationError):
    """SUPABASE_URL or the legacy JWT secret is missing or malformed."""


class ServiceUnavailableError(AppError):
    """A dependency is down or full; the client may retry."""

    status_code = 503
    code = "service_unavailable"
    cause = "pooler_unreachable"
    """Why, for the ServiceUnavailable metric (`shared._metrics.CAUSES`)."""


class DatabaseSecretNotSetError(ServiceUnavailableError):
    """The deployed secret still holds the stack's placeholder: `make secret` has not run."""

    cause = "secret_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    """A service the database depends on (Secrets Manager) is throttling or not answering."""

    cause = "secret_unavailable"


class SigningKeysUnavailableError(ServiceUnavailableError):
    """The keys that verify access tokens (the JWKS, the legacy JWT secret) cannot be read now.

    A 503, never a 401: the token may well be valid, and the client should retry.
    """

    cause = "signing_keys_unavailable"

    def __init__(self) -> None:
        super().__init__("The keys that verify access tokens cannot be read, retry shortly")
