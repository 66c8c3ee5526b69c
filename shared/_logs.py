"""Structured JSON logs, with the Lambda request id on every line, from every module.

Handlers get the request id through `shared._boundary.lambda_boundary`; shared modules keep using
`logging.getLogger(__name__)` and get the same JSON format and request keys, because the
Powertools handler is copied onto their parent loggers here.

Two things no log line may carry, whatever the levels:
- secrets: botocore logs every response body at DEBUG (a GetSecretValue body is the database
  URL with its password), and urllib3 and psycopg log connection details. Their loggers are
  capped at WARNING, so a DEBUG root logger cannot switch them on; set a level on one of them
  (or a child) explicitly to debug it.
- tracebacks of the logging system itself: Powertools writes JSON with `ensure_ascii=False`,
  so a lone surrogate (`/items/\\ud800` as the path of a JSON event, which Mangum's access
  line repeats) made the stream's UTF-8 encoder fail and `logging` print
  `--- Logging error ---` with a traceback. Lines are written as ASCII JSON instead: every
  character survives as a `\\u` escape, which any JSON reader (CloudWatch Logs Insights too)
  turns back into the character.
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
