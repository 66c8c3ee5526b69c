"""The boundary of a scheduled function: an EventBridge schedule invokes it, not a client.

`lambda_boundary` answers HTTP events only, so a scheduled function gets its own, smaller one:

- the request id on every log line, and never the event in one (the same Powertools context
  injection, with the schedule's event id as correlation id);
- only EventBridge's "Scheduled Event" runs the job: anything else (a test invoke with `{}`,
  an event from another source) is logged as a warning and does nothing;
- the invocation's deadline bounds the database work as in HTTP functions, so a frozen pooler
  costs one run, not a hang into Lambda's timeout;
- an error is logged through the error mapping (safe fields, never a message or a trace) and
  counted (ServiceUnavailable by cause), but not raised: a raise would put a traceback in the
  log and make Lambda retry an asynchronous invocation twice, piling connections on a database
  in trouble, while the next scheduled run, a minute later, is the retry that matters. A run
  that published nothing leaves a gap in the monitor's metrics, which an alarm can treat as
  breaching;
- the invocation's metrics (ColdStart, Latency, what the job records) are written when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared._deadline import deadline_for
from shared._error_mapping import error_response
from shared._identity import ANONYMOUS, acting_as
from shared._logs import get_logger
from shared._metrics import OTHER_ROUTE, function_name, invocation_metrics, record
from shared._secrets import prepare_reads
from shared._snapstart import register_hooks

logger = logging.getLogger(__name__)

type ScheduledJob = Callable[[], None]
type ScheduledHandler = Callable[[Any, LambdaContext], dict[str, Any]]

SCHEDULE_SOURCE = "aws.events"
SCHEDULE_DETAIL_TYPE = "Scheduled Event"
"""What EventBridge puts in a schedule's event (`source`, `detail-type`)."""


def is_scheduled_event(event: object) -> bool:
    """Whether the event is EventBridge's, sent by a schedule rule."""
    return (
        isinstance(event, dict)
        and event.get("source") == SCHEDULE_SOURCE
        and event.get("detail-type") == SCHEDULE_DETAIL_TYPE
    )


def scheduled_handler(job: ScheduledJob) -> ScheduledHandler:
    """Wrap a job that a schedule runs: `{"ran": true}` when it ran to the end, else false
    (a manual invoke sees which), errors logged and counted, never raised. Like
    `lambda_boundary`, wrapping registers the SnapStart hooks and prepares the secret reads."""
    register_hooks()
    prepare_reads()

    @get_logger().inject_lambda_context(
        correlation_id_path=correlation_paths.EVENT_BRIDGE, log_event=False
    )
    @wraps(job)
    def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
        started = time.perf_counter()
        with invocation_metrics(function_name(context)):
            ran = _run(job, event, context)
            record("Latency", (time.perf_counter() - started) * 1000, route=OTHER_ROUTE)
        return {"ran": ran}

    return handler


def _run(job: ScheduledJob, event: Any, context: LambdaContext) -> bool:
    if not is_scheduled_event(event):
        logger.warning("not a scheduled event: nothing done")
        return False
    with deadline_for(context), acting_as(ANONYMOUS):
        try:
            job()
        except Exception as exc:  # the boundary: logged and counted by the mapping, not raised
            error_response(exc)
            return False
    return True
