"""The database URL from AWS Secrets Manager: read on first use, re-read after a failed login.

Deployed functions get only the secret's ARN, so the URL stays out of git, the template and
plain environment variables. The secret holds a URL, `{"url": ...}`, or RDS rotation's JSON;
until `make secret` sets it, it holds the stack's placeholder, a 503 that heals on the next read.
It is read through the Parameters and Secrets Lambda Extension when configured (stdlib HTTP, no
boto3; its cache off, since this process keeps the URL and re-reads exactly when a cached copy
would be stale), else through boto3 with timeouts of 1 s instead of botocore's 60. Both paths
fail alike: gone, denied or empty is a configuration error (500), throttling or no answer a 503.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared._errors import (
    ConfigurationError,
    DatabaseConfigError,
    DatabaseSecretNotSetError,
    DatabaseUnavailableError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1
READ_TIMEOUT_S = 1
MAX_ATTEMPTS = 2
MIN_REFRESH_INTERVAL_S = 10.0
"""After a failed login, the secret is not read again within this many seconds of the last read."""

EXTENSION_PORT_VARIABLE = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
"""The extension's own port setting; set, it also says the extension is there to be asked."""
SESSION_TOKEN_VARIABLE = "AWS_SESSION_TOKEN"
EXTENSION_TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
"""The extension answers only requests that present the function's session token here."""
EXTENSION_TIMEOUT_S = 3.0
"""Seconds the local call waits to connect and for the answer, which includes the extension's
own calls to Secrets Manager (1 s each, set in serverless.yml) and its retries."""
MAX_EXTENSION_RESPONSE_BYTES = 1 << 20  # a secret holds at most 64 KiB

# What AWS answers when the secret is gone or not ours to read: configuration, not an outage.
_NOT_READABLE = frozenset(
    {
        "AccessDeniedException",
        "DecryptionFailure",
        "InvalidParameterException",
        "InvalidRequestException",
        "ResourceNotFoundException",
    }
)
_THROTTLED = frozenset({"ThrottlingException", "TooManyRequestsException"})
_KNOWN_CODES = sorted(_NOT_READABLE | _THROTTLED)
# CloudFormation's GenerateSecretString; a URL or JSON always holds punctuation.
_PLACEHOLDER = re.compile(r"[A-Za-z0-9]+")


def _database_unavailable() -> ServiceUnavailableError:
    return DatabaseUnavailableError("The database secret cannot be read, retry shortly")


def _url_from_rds_fields(fields: dict[str, Any]) -> str:
    user = quote(str(fields["username"]), safe="")
    password = quote(str(fields["password"]), safe="")
    port = fields.get("port", 5432)
    dbname = fields.get("dbname", "postgres")
    return f"postgresql://{user}:{password}@{fields['host']}:{port}/{dbname}"


def parse_secret(secret: str) -> str:
    """The URL inside a secret value, whichever of the three shapes it has."""
    text = secret.strip()
    if not text.startswith("{"):
        if "://" not in text:
            raise DatabaseSecretNotSetError("The database secret does not hold a URL")
        return text
    try:
        fields = json.loads(text)
        if "url" in fields:
            return str(fields["url"])
        return _url_from_rds_fields(fields)
    except (ValueError, KeyError, TypeError):
        # Never quote the value: it is the credential.
        raise DatabaseConfigError("The database secret is malformed") from None


def extension_configured() -> bool:
    """Whether secrets are read through the Parameters and Secrets Lambda Extension: its port
    is set (serverless.yml does, with the layer) and there is a session token to present."""
    return bool(os.environ.get(EXTENSION_PORT_VARIABLE) and os.environ.get(SESSION_TOKEN_VARIABLE))


@lru_cache(maxsize=1)
def secrets_manager_client() -> SecretsManagerClient:
    """The process's Secrets Manager client: short timeouts, two attempts at most."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    return boto3.client("secretsmanager", config=config)


class _Unreadable(Exception):
    """A failed read: `error` names what went wrong for the log, never the value."""

    def __init__(self, error: str, *, configuration: bool, status: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.configuration = configuration
        self.status = status


def _through_sdk(secret_id: str) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = secrets_manager_client().get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise _Unreadable(code, configuration=code in _NOT_READABLE) from None
    except BotoCoreError as exc:  # timeouts, no connection, no credentials or region
        raise _Unreadable(type(exc).__name__, configuration=False) from None
    return response.get("SecretString")


def _through_extension(secret_id: str) -> str | None:
    """GET /secretsmanager/get from the extension on localhost, which answers what
    GetSecretValue answers. http.client, not urllib: it never sends the token to a proxy."""
    import http.client

    try:
        port = int(os.environ[EXTENSION_PORT_VARIABLE])
    except ValueError:
        raise _Unreadable(
            f"{EXTENSION_PORT_VARIABLE} is not a number", configuration=True
        ) from None
    connection = http.client.HTTPConnection("localhost", port, timeout=EXTENSION_TIMEOUT_S)
    try:
        connection.request(
            "GET",
            f"/secretsmanager/get?secretId={quote(secret_id, safe='')}",
            headers={EXTENSION_TOKEN_HEADER: os.environ[SESSION_TOKEN_VARIABLE]},
        )
        response = connection.getresponse()
        body = response.read(MAX_EXTENSION_RESPONSE_BYTES)
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, cut off
        raise _Unreadable(type(exc).__name__, configuration=False) from None
    finally:
        connection.close()
    if response.status != 200:
        raise _extension_error(response.status, body.decode(errors="replace"))
    try:
        value = json.loads(body).get("SecretString")
    except (ValueError, AttributeError):
        raise _Unreadable("malformed answer", configuration=False, status=200) from None
    return value if isinstance(value, str) else None


def _extension_error(status: int, text: str) -> _Unreadable:
    """The extension passes Secrets Manager's errors on (`{"__type": "<code>", ...}`, status
    400 for most) and adds its own (401/403 for a token it refuses, 5xx, timeouts): a code
    that means "not readable", or any other 4xx but throttling, is configuration."""
    code = next((name for name in _KNOWN_CODES if name in text), f"HTTP {status}")
    client_error = 400 <= status < 500 and status != 429 and code not in _THROTTLED
    return _Unreadable(code, configuration=code in _NOT_READABLE or client_error, status=status)


def read_secret_string(
    secret_id: str,
    what: str,
    *,
    not_readable: Callable[[str], ConfigurationError] = DatabaseConfigError,
    unavailable: Callable[[], ServiceUnavailableError] = _database_unavailable,
) -> str:
    """One read of the secret holding `what` (e.g. "database secret"): through the extension
    where it is configured, else one GetSecretValue call through boto3.

    Failures are `not_readable` (gone, denied, empty: a 500 naming no value) or `unavailable`
    (throttled, timed out, unreachable: a 503), each logged once as a warning.
    """
    through_extension = extension_configured()
    try:
        value = _through_extension(secret_id) if through_extension else _through_sdk(secret_id)
    except _Unreadable as failure:
        logger.warning(
            f"{what} unreadable",
            extra={
                "error": failure.error,
                "status": failure.status,
                "via": "extension" if through_extension else "sdk",
            },
        )
        if failure.configuration:
            raise not_readable(f"The {what} cannot be read") from None
        raise unavailable() from None
    if not value:
        raise not_readable(f"The {what} is empty")
    return value


def _read_secret(secret_id: str) -> str:
    """The URL in the database secret; the stack's placeholder is a 503 until it is set."""
    value = read_secret_string(secret_id, "database secret")
    if _PLACEHOLDER.fullmatch(value.strip()):
        raise DatabaseSecretNotSetError("The database secret is not set yet")
    logger.info("database secret read")
    return parse_secret(value)


class DatabaseSecret:
    """The URL held in one secret: read on first use, re-read after failed logins, at most
    once per `MIN_REFRESH_INTERVAL_S`, safe to share between threads."""

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id
        self._lock = threading.Lock()
        self._url: str | None = None
        self._read_at = float("-inf")

    def url(self) -> str:
        """The URL last read; the first call reads the secret."""
        with self._lock:
            if self._url is None:
                self._url = self._read()
            return self._url

    def refresh(self, failed_url: str) -> str | None:
        """After a failed login with `failed_url`: a different URL to retry with, or None.

        A thread that waited for another's refresh gets its URL without a read of its own.
        Within `MIN_REFRESH_INTERVAL_S` of the last read the secret is not read again.
        """
        with self._lock:
            if self._url is not None and self._url != failed_url:
                return self._url
            if time.monotonic() - self._read_at < MIN_REFRESH_INTERVAL_S:
                return None
            self._url = self._read()
            if self._url == failed_url:
                return None
            logger.info("database secret changed since the last read")
            return self._url

    def _read(self) -> str:
        self._read_at = time.monotonic()  # failed reads count too: they bound the next one
        return _read_secret(self.secret_id)


def prepare_reads() -> None:
    """Load what the first read needs (the extension's HTTP client, or boto3 and its client)
    while Lambda initialises the function, not on its first request; nothing without a secret.
    Called when a handler is wrapped, so importing the platform costs nothing."""
    if not (os.environ.get("DATABASE_SECRET_ARN") or os.environ.get("SUPABASE_JWT_SECRET_ARN")):
        return
    if extension_configured():
        import http.client  # noqa: F401

        return
    from botocore.exceptions import BotoCoreError

    try:
        secrets_manager_client()
    except BotoCoreError:  # no region, say: the first read tries again and answers 503
        logger.warning("Secrets Manager client not created at start-up")
