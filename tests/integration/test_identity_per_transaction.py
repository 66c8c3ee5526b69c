"""Identity lives exactly as long as one transaction, on server connections the pooler shares.

Two users create, list, read, change and delete items through the items function; neither ever
sees or changes the other's. Then the leak proof: with a pool of one server connection, every
client of the database runs on the same Postgres backend in turn (SHOW SERVERS shows the one,
and each client reports its pid), so whatever a transaction left on it, the next client would
inherit. After user A's requests, a plain client that sets nothing finds the login role and no
claims; user B's requests on the same backend see only B's rows. The control sets A's identity
the way a transaction pooler cannot contain (`SET ROLE`, `set_config(..., false)`) and the
next plain client finds itself acting as A, reading A's rows.

Each runs with the functions' engines connecting per request and keeping their connection
(`pool_mode`): a kept client connection must leave nothing behind either.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import psycopg
import pytest
from sqlalchemy import text

from infra.local_stack import LocalStack
from infra.migrate import upgrade
from shared._engine import transaction
from tests.fixtures.identities import Acting, new_user
from tests.fixtures.lambda_events import body_of, http_event
from tests.fixtures.pgbouncer import pooler_settings, show_for
from tests.fixtures.stack import reset_caches
from tests.integration.test_items import create, invoke

IDENTITY_ON_THE_BACKEND = """
    SELECT current_user,
           nullif(current_setting('request.jwt.claims', true), ''),
           current_setting('statement_timeout'),
           pg_backend_pid()
"""

pytestmark = pytest.mark.usefixtures("pool_mode")


class Backend(NamedTuple):
    """Who a client acts as on its server connection, and which backend that is."""

    role: str
    claims: str | None
    statement_timeout: str
    pid: int


def plain_client(stack: LocalStack) -> psycopg.Connection[Any]:
    """Another application's client of the pooler: it sets nothing, in autocommit."""
    return psycopg.connect(stack.pooler_url(), prepare_threshold=None, autocommit=True)


def next_client_finds(stack: LocalStack) -> Backend:
    with plain_client(stack) as conn:
        return Backend(*conn.execute(IDENTITY_ON_THE_BACKEND).fetchone() or ())


def in_a_transaction_of_our_own(sku: str) -> tuple[Backend, set[str]]:
    """A transaction begun by the project's driver: it stores an item, then says whom it acts
    as, on which backend, and whose rows it sees."""
    with transaction() as conn:
        conn.execute(text("INSERT INTO items (sku, name) VALUES (:sku, 'x')"), {"sku": sku})
        backend = Backend(*conn.execute(text(IDENTITY_ON_THE_BACKEND)).one())
        owners = conn.execute(text("SELECT DISTINCT owner_id::text FROM items")).scalars()
        return backend, set(owners)


def status_of(route: str, item_id: int, body: Any = None) -> int:
    response = invoke(http_event(route, params={"item_id": item_id}, body=body))
    return int(response["statusCode"])


def listed_ids() -> list[int]:
    page = body_of(invoke(http_event("GET /items", query="limit=100")))
    return [item["id"] for item in page["items"]]


def pooler_log(stack: LocalStack) -> str:
    """PgBouncer's log lines about this database's clients and servers, to explain a failure."""
    lines = stack.pgbouncer_log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if stack.config.database in line)


@pytest.fixture
def one_server_connection(
    empty_database: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStack]:
    """A migrated database whose pool holds at most one server connection; the functions use it."""
    upgrade(empty_database.direct_url())
    monkeypatch.setenv("DATABASE_URL", empty_database.pooler_url())
    reset_caches()
    with pooler_settings(empty_database, default_pool_size=1):
        yield empty_database
    reset_caches()


def test_two_users_never_see_or_change_each_others_items(act: Acting) -> None:
    a, b = new_user(), new_user()
    sku = f"SKU-{uuid.uuid4().hex[:12]}"
    with act(a):
        a_item = create(sku, name="A's")
    with act(b):
        b_item = create(sku, name="B's")  # the same SKU: unique per owner, not globally
        b_listed = listed_ids()
        b_touching_a = [
            status_of("GET /items/{item_id}", a_item["id"]),
            status_of("PATCH /items/{item_id}", a_item["id"], body={"name": "taken by B"}),
            status_of("DELETE /items/{item_id}", a_item["id"]),
        ]
        b_own = [
            status_of("PATCH /items/{item_id}", b_item["id"], body={"quantity": 7}),
            status_of("GET /items/{item_id}", b_item["id"]),
        ]
    with act(a):
        a_listed = listed_ids()
        a_item_after = body_of(
            invoke(http_event("GET /items/{item_id}", params={"item_id": a_item["id"]}))
        )
        a_duplicate = invoke(http_event("POST /items", body={"sku": sku, "name": "again"}))
        a_deletes_own = status_of("DELETE /items/{item_id}", a_item["id"])

    assert (a_listed, b_listed) == ([a_item["id"]], [b_item["id"]])
    assert b_touching_a == [404, 404, 404]  # never a 403 that would confirm the item exists
    assert a_item_after == a_item
    assert b_own == [200, 200]
    assert a_duplicate["statusCode"] == 409
    assert a_deletes_own == 204


def test_identity_ends_with_each_transaction_on_the_one_shared_server_connection(
    one_server_connection: LocalStack, act: Acting
) -> None:
    stack = one_server_connection
    a, b = new_user(), new_user()
    with act(a):
        a_items = [create(f"A-{n}") for n in range(3)]
        a_changes = [
            status_of("PATCH /items/{item_id}", a_items[0]["id"], body={"quantity": 1}),
            status_of("DELETE /items/{item_id}", a_items[2]["id"]),
        ]
        as_a, _ = in_a_transaction_of_our_own("A-direct")
    # Three clients in a row: A's last transaction, a client that sets nothing, B's.
    after_a = next_client_finds(stack)
    with act(b):
        as_b, owners_seen_by_b = in_a_transaction_of_our_own("B-direct")
        b_item = create("A-0")  # A's SKU: unique per owner, not globally
        b_listed = listed_ids()
        b_touching_a = [
            status_of("GET /items/{item_id}", a_items[0]["id"]),
            status_of("PATCH /items/{item_id}", a_items[1]["id"], body={"name": "B's now"}),
            status_of("DELETE /items/{item_id}", a_items[1]["id"]),
        ]
    after_b = next_client_finds(stack)
    [server] = show_for(stack, "SERVERS")
    [pool] = show_for(stack, "POOLS")

    assert a_changes == [200, 204]
    assert b_touching_a == [404, 404, 404]
    assert len(b_listed) == 2
    assert b_item["id"] in b_listed
    assert (pool["sv_active"], pool["sv_idle"] + pool["sv_used"]) == (0, 1)
    assert [as_a.pid, after_a.pid, as_b.pid] == [as_a.pid] * 3, pooler_log(stack)
    assert after_b.pid == server["remote_pid"], pooler_log(stack)
    assert (as_a.role, as_a.claims) == ("authenticated", a.claims_json())
    assert after_a == Backend(stack.config.user, None, "0", as_a.pid)
    assert (as_b.role, as_b.claims, owners_seen_by_b) == (
        "authenticated",
        b.claims_json(),
        {b.user_id},
    )
    assert after_b == Backend(stack.config.user, None, "0", after_b.pid)


def test_control_session_level_settings_leak_to_the_next_client(
    one_server_connection: LocalStack, act: Acting
) -> None:
    stack = one_server_connection
    a = new_user()
    with act(a):
        a_item = create("A-0")

    with plain_client(stack) as conn:  # what a transaction pooler cannot contain
        conn.execute("SET ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (a.claims_json(),))

    after_a = next_client_finds(stack)
    with plain_client(stack) as conn:
        read_by_a_stranger = conn.execute("SELECT id FROM items").fetchall()

    [server] = show_for(stack, "SERVERS")
    assert after_a == Backend("authenticated", a.claims_json(), "0", server["remote_pid"])
    assert read_by_a_stranger == [(a_item["id"],)]
