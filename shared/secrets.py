"""The database URL from AWS Secrets Manager, read on first use and refreshed on rotation.

Deployed functions receive only the secret's ARN (`DATABASE_SECRET_ARN`), never the URL: it
stays out of git, out of the CloudFormation template and out of plain environment variables.
The secret holds the URL as a string, or a JSON object with a `url` key, or the JSON that RDS
rotation maintains (`username`, `password`, `host`, `port`, `dbname`). Powertools' parameters
utility (and so boto3, which the Lambda runtime provides) is imported only when a secret is
configured, so local runs with DATABASE_URL never load it.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from shared.errors import DatabaseConfigError, DatabaseSecretNotSetError

__all__ = ["fetch_database_url"]

logger = logging.getLogger(__name__)


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


def fetch_database_url(secret_id: str) -> str:
    """Read the URL from the secret, always fresh.

    Callers keep what they read: `shared.db` builds the process's engine from it once and reads
    again only after a failed login. A value that is not usable yet (the stack's placeholder)
    is never cached, so a warm instance recovers as soon as the secret is set.
    """
    from aws_lambda_powertools.utilities.parameters import get_secret
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        value = get_secret(secret_id, force_fetch=True)
    except GetParameterError as exc:
        logger.error("database secret unreadable", extra={"error": type(exc.__context__).__name__})
        raise DatabaseConfigError("The database secret cannot be read") from None
    if not isinstance(value, str) or not value:
        raise DatabaseConfigError("The database secret is empty")
    logger.info("database secret read")
    return parse_secret(value)
