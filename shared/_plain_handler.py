"""`@plain_handler`: the whole stanza of a plain function that reads the database.

The boundary, one autocommit connection through the pooler as `anon`, and a 200 JSON answer:
for public reads such as the health check, with no FastAPI to import at cold start.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from sqlalchemy import Connection

from shared._boundary import (
    LambdaEvent,
    LambdaHandler,
    LambdaResponse,
    json_response,
    lambda_boundary,
)
from shared._engine import autocommit_connection


def plain_handler(answer: Callable[[Connection], dict[str, Any]]) -> LambdaHandler:
    """A plain function's Lambda handler: `answer` reads through one autocommit connection and
    returns the JSON body of a 200; the boundary answers everything else."""

    @wraps(answer)
    def handler(_event: LambdaEvent, _context: Any) -> LambdaResponse:
        with autocommit_connection() as conn:
            return json_response(200, answer(conn))

    return lambda_boundary(handler)
