"""The database URL from AWS Secrets Manager: read on first use, re-read after a failed login.

Deployed functions receive only the secret's ARN (`DATABASE_SECRET_ARN`), never the URL: it
stays out of git, out of the CloudFormation template and out of plain environment variables.
The secret holds the URL as a string, or a JSON object with a `url` key, or the JSON that RDS
rotation maintains (`username`, `password`, `host`, `port`, `dbname`). Until `make secret` sets
it, it holds the stack's generated placeholder (letters and digits only): that is a 503, and
the next request reads again, so a warm instance recovers as soon as the secret is set.

Cold start: the Secrets Manager client is created while Lambda initialises the function (at
import, only when `DATABASE_SECRET_ARN` is set), so the first request pays one GetSecretValue
call instead of boto3's import and client creation (0.4-0.5 s here). The AWS Parameters and
Secrets Lambda Extension would skip boto3 altogether (one HTTP call to localhost), but it
ships as a Lambda layer, and a layer makes `serverless package` call AWS, so the stack could
no longer be packaged and checked offline. boto3 comes from the Lambda runtime; local runs
with `DATABASE_URL` never import it. Measured here (moto server on loopback, medians of
interleaved runs): the first request costs what it costs with `DATABASE_URL` plus one call;
import plus first request is 1.3x (items) to 1.4x (health) the same with `DATABASE_URL`.

Bounds: the client waits at most 1 s to connect and 1 s for an answer, and tries twice
(standard retry mode), instead of botocore's 60 s timeouts and its retries: an unreachable
endpoint costs about 5 s at worst, inside the function's timeout. After a failed login the
secret is re-read only if the last read is older than `MIN_REFRESH_INTERVAL_S`, and a login
is retried only if the secret changed: while the stored password is wrong, a request costs
one failed login and no secret read. A lock makes threads that refresh at once read once.
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

from shared.errors import (
    ConfigurationError,
    DatabaseConfigError,
    DatabaseSecretNotSetError,
    DatabaseUnavailableError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

__all__ = [
    "MIN_REFRESH_INTERVAL_S",
    "DatabaseSecret",
    "parse_secret",
    "read_secret_string",
    "secrets_manager_client",
]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1
READ_TIMEOUT_S = 1
MAX_ATTEMPTS = 2
MIN_REFRESH_INTERVAL_S = 10.0
"""After a failed login, the secret is not read again within this many seconds of the last read."""

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


def read_secret_string(
    secret_id: str,
    what: str,
    *,
    not_readable: Callable[[str], ConfigurationError] = DatabaseConfigError,
    unavailable: Callable[[], ServiceUnavailableError] = _database_unavailable,
) -> str:
    """One GetSecretValue call for the secret holding `what` (e.g. "database secret").

    Failures are `not_readable` (gone, denied, empty: a 500 naming no value) or `unavailable`
    (throttled, timed out, unreachable: a 503), each logged once as a warning.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = secrets_manager_client().get_secret_value(SecretId=secret_id).get("SecretString")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        logger.warning(f"{what} unreadable", extra={"error": code})
        if code in _NOT_READABLE:
            raise not_readable(f"The {what} cannot be read") from None
        raise unavailable() from None
    except BotoCoreError as exc:  # timeouts, no connection, no credentials or region
        logger.warning(f"{what} unreadable", extra={"error": type(exc).__name__})
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


# Deployed functions create the client while Lambda initialises them, not on the first request.
if os.environ.get("DATABASE_SECRET_ARN") or os.environ.get("SUPABASE_JWT_SECRET_ARN"):
    from botocore.exceptions import BotoCoreError

    try:
        secrets_manager_client()
    except BotoCoreError:  # no region, say: the first read tries again and answers 503
        logger.warning("Secrets Manager client not created at start-up")
