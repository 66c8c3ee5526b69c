"""The platform's logger: one format on every platform logger, credentials' loggers capped."""

from __future__ import annotations

import logging

from shared._logs import THIRD_PARTY_LOGGERS, get_logger


def test_libraries_that_log_credentials_are_capped_at_warning() -> None:
    get_logger()

    assert {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS} == dict.fromkeys(
        THIRD_PARTY_LOGGERS, logging.WARNING
    )


def test_the_platforms_loggers_get_the_structured_format() -> None:
    logger = get_logger()

    for name in ("shared", "functions", "mangum"):
        formatters = [h.formatter for h in logging.getLogger(name).handlers]
        assert any(isinstance(f, type(logger.registered_formatter)) for f in formatters), name
