"""Least privilege by default: with no verified identity, the database sees `anon`.

Through the real pooler, `current_user` inside the transaction says whom each path acts as: a
plain handler, a FastAPI route on the public read session, a FastAPI route that opens a
transaction of its own, and `shared._engine.transaction()` on its own all act as `anon`, which may
not read items; the login role is reached only inside `acting_as_login_role()`. An identity
left in scope before an invocation (a context variable leaked by earlier code in the same
process) never reaches its database work: the boundary starts every invocation as `anon`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from mangum import Mangum
from psycopg import errors
from sqlalchemy import Connection, Row, text
from sqlalchemy.exc import ProgrammingError

from infra.local_stack import LocalStack
from shared._boundary import LambdaHandler, lambda_boundary
from shared._dependencies import PublicReadSessionDep
from shared._engine import transaction
from shared._fastapi_app import error_responses, install_error_handlers
from shared._identity import acting_as, acting_as_login_role
from shared._plain_handler import plain_handler
from tests.fixtures.identities import new_user, service_role
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

WHO_AM_I = text("SELECT current_user AS role, auth.role() AS claimed_role, auth.uid() AS user_id")


def as_answer(row: Row[Any]) -> dict[str, Any]:
    return {"role": row.role, "claimed_role": row.claimed_role, "user_id": row.user_id}


def who_am_i(conn: Connection) -> dict[str, Any]:
    return as_answer(conn.execute(WHO_AM_I).one())


AS_ANON = {"role": "anon", "claimed_role": "anon", "user_id": None}

plain_who_am_i = plain_handler(who_am_i)


def build_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/public", responses=error_responses(503))
    async def public(session: PublicReadSessionDep) -> dict[str, Any]:
        return as_answer((await session.execute(WHO_AM_I)).one())

    @app.get("/own-transaction", responses=error_responses(503))
    def own_transaction() -> dict[str, Any]:
        with transaction() as conn:
            return who_am_i(conn)

    install_error_handlers(app)
    return app


fastapi_handler = lambda_boundary(Mangum(build_app(), lifespan="off"))

HANDLERS: dict[str, tuple[LambdaHandler, str]] = {
    "plain handler": (plain_who_am_i, "GET /who-am-i"),
    "public read session": (fastapi_handler, "GET /public"),
    "route's own transaction": (fastapi_handler, "GET /own-transaction"),
}


def invoke(name: str) -> dict[str, Any]:
    handler, route = HANDLERS[name]
    response = handler(http_event(route, token=""), LambdaTestContext())
    assert response["statusCode"] == 200, response["body"]
    answer: dict[str, Any] = body_of(response)
    return answer


@pytest.mark.parametrize("name", HANDLERS)
def test_with_no_token_every_path_acts_as_anon(name: str) -> None:
    assert invoke(name) == AS_ANON


@pytest.fixture(params=["a user", "the service role", "the login role"])
def leaked_identity(request: pytest.FixtureRequest) -> Iterator[str]:
    """An identity in scope before the invocation, as a context variable that earlier code in
    the same process (a previous invocation, a library) set and never reset would leave."""
    leaks = {
        "a user": lambda: acting_as(new_user()),
        "the service role": lambda: acting_as(service_role()),
        "the login role": acting_as_login_role,
    }
    with leaks[request.param]():
        yield request.param


@pytest.mark.parametrize("name", HANDLERS)
def test_an_identity_leaked_into_an_invocation_never_reaches_the_database(
    leaked_identity: str, name: str
) -> None:
    assert invoke(name) == AS_ANON


def test_a_transaction_with_no_identity_acts_as_anon_and_cannot_read_items() -> None:
    with transaction() as conn:
        who = who_am_i(conn)
    with pytest.raises(ProgrammingError) as refused, transaction() as conn:
        conn.execute(text("SELECT count(*) FROM items"))

    assert who == AS_ANON
    assert isinstance(refused.value.orig, errors.InsufficientPrivilege)


def test_the_login_role_only_inside_the_named_opt_in(database: LocalStack) -> None:
    with acting_as_login_role(), transaction() as conn:
        inside = who_am_i(conn)
        conn.execute(text("SELECT count(*) FROM items"))  # the owner's rights
    with transaction() as conn:
        after = who_am_i(conn)

    assert inside == {"role": database.config.user, "claimed_role": None, "user_id": None}
    assert after == AS_ANON


def test_the_public_read_session_asks_for_no_token_even_in_the_openapi_document() -> None:
    operation = build_app().openapi()["paths"]["/public"]["get"]

    assert "security" not in operation
    assert set(operation["responses"]) == {"200", "503"}
