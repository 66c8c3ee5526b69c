"""Structured JSON logs, with the Lambda request id on every line, from every module.

Functions decorate their handler with `logger.inject_lambda_context(...)`; shared modules keep
using `logging.getLogger(__name__)` and get the same JSON format and request keys, because the
Powertools handler is copied onto their parent loggers here.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

__all__ = ["logger"]

# Service name and level come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_LOG_LEVEL.
logger = Logger()

_PARENT_LOGGERS = {"shared", "functions", "mangum"}
for _name in _PARENT_LOGGERS:
    logging.getLogger(_name)  # register, so the copy below finds them
copy_config_to_registered_loggers(source_logger=logger, include=_PARENT_LOGGERS)
