"""One request, one connection, one login, and no statement it does not need.

Counted where they happen: logins in PgBouncer's log, statements in Postgres's log
(log_statement=all), both written by the real servers of the local stack.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from functions.health.handler import handler as health_handler
from functions.items.handler import handler as items_handler
from infra.local_stack import LocalStack
from shared.db import get_engine
from shared.models import Item
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.stack import TEST_APPLICATION_NAME

STATEMENT = re.compile(rf"app={TEST_APPLICATION_NAME} .*LOG:\s+(?:statement|execute [^:]*): (.*)")
# PgBouncer itself sends these on a server connection: tracked parameters and its health check.
POOLER_OWN = re.compile(
    r"^(SET (application_name|client_encoding|datestyle|timezone)|select 1$)", re.I
)


class ServerLogs:
    """Reads what the pooler and the server logged after a mark."""

    def __init__(self, stack: LocalStack) -> None:
        self.logs = (stack.pgbouncer_log, stack.postgres_log)
        self.offsets = (0, 0)

    def mark(self) -> None:
        self.offsets = tuple(path.stat().st_size for path in self.logs)  # type: ignore[assignment]

    def _since_mark(self, path: Path, offset: int) -> list[str]:
        with path.open(encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read().splitlines()

    def logins(self) -> int:
        lines = self._since_mark(self.logs[0], self.offsets[0])
        return sum("login attempt" in line for line in lines)

    def statements(self) -> list[str]:
        lines = self._since_mark(self.logs[1], self.offsets[1])
        found = [match.group(1).strip() for line in lines if (match := STATEMENT.search(line))]
        return [statement for statement in found if not POOLER_OWN.match(statement)]


def measure(stack: LocalStack, request: Callable[[], object]) -> tuple[int, list[str]]:
    """Logins and statements that one call causes, once both servers have written them."""
    logs = ServerLogs(stack)
    # Both engines (sync for plain handlers, asyncio for FastAPI) initialised already.
    health_handler(http_event("get_health"), LambdaTestContext())
    items_handler(http_event("get_item"), LambdaTestContext())
    time.sleep(0.2)
    logs.mark()
    request()
    time.sleep(0.2)  # the servers write their logs asynchronously to us
    return logs.logins(), logs.statements()


def create_item() -> None:
    body = {"sku": f"SKU-{uuid.uuid4().hex[:12]}", "name": "Counted"}
    response = items_handler(http_event("post_items", body=body), LambdaTestContext())
    assert response["statusCode"] == 201


def test_orm_create_uses_one_login_and_one_transaction(stack: LocalStack) -> None:
    logins, statements = measure(stack, create_item)

    assert logins == 1
    assert [s.split()[0].upper() for s in statements] == ["BEGIN", "SELECT", "INSERT", "COMMIT"]
    assert "set_config('statement_timeout'" in statements[1]
    assert "RETURNING" in statements[2]


def test_read_is_one_bounded_read_only_statement_without_begin_or_commit(stack: LocalStack) -> None:
    created = body_of(
        items_handler(
            http_event("post_items", body={"sku": f"SKU-{uuid.uuid4().hex[:12]}", "name": "Read"}),
            LambdaTestContext(),
        )
    )

    logins, statements = measure(
        stack,
        lambda: items_handler(
            http_event("get_item", path=f"/items/{created['id']}"), LambdaTestContext()
        ),
    )

    assert logins == 1
    assert len(statements) == 2, statements
    assert "set_config('statement_timeout'" in statements[0]
    assert "set_config('transaction_read_only'" in statements[0]
    assert statements[1].upper().startswith("SELECT")


def test_control_expire_on_commit_costs_a_second_login(stack: LocalStack) -> None:
    def create_then_read_with_sqlalchemy_defaults() -> None:
        with Session(get_engine()) as session:  # expire_on_commit=True
            item = Item(sku=f"SKU-{uuid.uuid4().hex[:12]}", name="Expired")
            session.add(item)
            session.commit()
            assert item.id > 0  # reloads the expired object over a new connection

    logins, statements = measure(stack, create_then_read_with_sqlalchemy_defaults)

    assert logins == 2
    assert any(s.upper().startswith("SELECT") for s in statements)
