"""Structured JSON logs, with the Lambda request id on every line, from every module.

Shared modules log with `logging.getLogger(__name__)` and get the Powertools format, copied onto
their parent loggers. Loggers of libraries that log credentials at DEBUG (botocore logs a
GetSecretValue body, the URL with its password) are capped at WARNING. Lines are ASCII JSON, so a
lone surrogate in a request path cannot make the stream's encoder fail.
"""

from __future__ import annotations

import json
import logging
from functools import cache, partial

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

THIRD_PARTY_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3", "psycopg")
"""Libraries whose DEBUG (or INFO) output can include credentials or connection strings."""

_PARENT_LOGGERS = {"shared", "functions", "mangum"}


@cache
def get_logger() -> Logger:
    """The Powertools logger, built (and copied onto the platform's loggers) when the first
    handler is wrapped: importing the platform reads no environment and configures nothing.

    Service name and level come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_LOG_LEVEL.
    """
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logger = Logger(json_serializer=partial(json.dumps, default=str, separators=(",", ":")))
    for name in _PARENT_LOGGERS:
        logging.getLogger(name)  # register, so the copy below finds them
    copy_config_to_registered_loggers(source_logger=logger, include=_PARENT_LOGGERS)
    return logger
