"""The items policies themselves, in SQL through the pooler, as any client acting as a user runs.

Each check runs in one transaction that is rolled back: it switches to a user the way
`shared._driver` does (`set_config('role', ...)` and `request.jwt.claims`, transaction-local),
so it tests the policies and grants, not the project's code. The control removes row-level
security from the table inside its own transaction and must find every violation.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from infra.local_stack import LocalStack
from shared._identity import ANONYMOUS, Identity
from tests.fixtures.identities import new_user, service_role

VIOLATIONS = [
    "reads the other's row",
    "updates the other's row",
    "deletes the other's row",
    "inserts a row owned by the other",
    "gives its own row to the other",
]


def pooler_client(stack: LocalStack) -> psycopg.Connection[Any]:
    """A client of the transaction pooler that prepares nothing."""
    return psycopg.connect(stack.pooler_url(), prepare_threshold=None)


def act_as(conn: psycopg.Connection[Any], identity: Identity | None) -> None:
    """Switch the transaction to `identity` (None: back to the login role)."""
    if identity is None:
        conn.execute("RESET ROLE")
        conn.execute("SELECT set_config('request.jwt.claims', '', true)")
        return
    conn.execute(
        "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
        (identity.role, identity.claims_json()),
    )


def new_sku() -> str:
    return f"RLS-{uuid.uuid4().hex[:12]}"


def insert(conn: psycopg.Connection[Any], owner: Identity) -> int:
    """An item created by `owner`, who owns it through the column's default."""
    act_as(conn, owner)
    row = conn.execute(
        "INSERT INTO items (sku, name) VALUES (%s, 'row') RETURNING id", (new_sku(),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def refused(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]) -> bool:
    """Whether Postgres refuses the statement for lack of privilege (a policy's WITH CHECK)."""
    try:
        with conn.transaction():  # a savepoint: the refusal leaves the transaction usable
            conn.execute(statement, params)
    except errors.InsufficientPrivilege:
        return True
    return False


def violations(conn: psycopg.Connection[Any], user: Identity, other: Identity) -> list[str]:
    """What `user` manages to do to `other`'s rows; [] when the policies isolate them."""
    others_row = insert(conn, other)
    own_row = insert(conn, user)
    act_as(conn, user)
    found = []
    if conn.execute("SELECT 1 FROM items WHERE id = %s", (others_row,)).fetchall():
        found.append(VIOLATIONS[0])
    if conn.execute("UPDATE items SET name = 'changed' WHERE id = %s", (others_row,)).rowcount:
        found.append(VIOLATIONS[1])
    if conn.execute("DELETE FROM items WHERE id = %s", (others_row,)).rowcount:
        found.append(VIOLATIONS[2])
    if not refused(
        conn,
        "INSERT INTO items (owner_id, sku, name) VALUES (%s, %s, 'planted')",
        (other.user_id, new_sku()),
    ):
        found.append(VIOLATIONS[3])
    if not refused(conn, "UPDATE items SET owner_id = %s WHERE id = %s", (other.user_id, own_row)):
        found.append(VIOLATIONS[4])
    return found


def test_a_user_can_do_nothing_to_another_users_rows(stack: LocalStack) -> None:
    with pooler_client(stack) as conn, conn.transaction(force_rollback=True):
        found = violations(conn, new_user(), new_user())

    assert found == []


def test_control_without_row_level_security_the_same_check_finds_every_violation(
    stack: LocalStack,
) -> None:
    with pooler_client(stack) as conn, conn.transaction(force_rollback=True):
        conn.execute("ALTER TABLE items DISABLE ROW LEVEL SECURITY")  # rolled back with the rest
        found = violations(conn, new_user(), new_user())

    assert found == VIOLATIONS


def test_a_user_reads_changes_and_deletes_its_own_rows(stack: LocalStack) -> None:
    user = new_user()
    with pooler_client(stack) as conn, conn.transaction(force_rollback=True):
        row = insert(conn, user)
        owner = conn.execute("SELECT owner_id FROM items WHERE id = %s", (row,)).fetchone()
        updated = conn.execute("UPDATE items SET quantity = 5 WHERE id = %s", (row,)).rowcount
        deleted = conn.execute("DELETE FROM items WHERE id = %s", (row,)).rowcount

    assert owner == (uuid.UUID(str(user.user_id)),)  # auth.uid(), the column's default
    assert (updated, deleted) == (1, 1)


@pytest.mark.parametrize(
    "statement",
    ["SELECT count(*) FROM items", "INSERT INTO items (sku, name) VALUES ('anon-1', 'x')"],
)
def test_anon_has_no_privilege_on_items(stack: LocalStack, statement: str) -> None:
    with pooler_client(stack) as conn, conn.transaction(force_rollback=True):
        act_as(conn, ANONYMOUS)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)


def test_service_role_bypasses_the_policies(stack: LocalStack) -> None:
    with pooler_client(stack) as conn, conn.transaction(force_rollback=True):
        rows = {insert(conn, new_user()), insert(conn, new_user())}
        act_as(conn, service_role())
        seen = conn.execute("SELECT id FROM items WHERE id = ANY(%s)", (list(rows),)).fetchall()

    assert {row_id for (row_id,) in seen} == rows


def test_row_level_security_is_forced_and_every_policy_asks_auth_uid_once(
    stack: LocalStack,
) -> None:
    with pooler_client(stack) as conn:
        forced = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'items'::regclass"
        ).fetchone()
        policies = conn.execute(
            "SELECT cmd, roles::text[], coalesce(qual, with_check) FROM pg_policies"
            " WHERE tablename = 'items' ORDER BY cmd"
        ).fetchall()

    assert forced == (True, True)
    assert [(cmd, roles) for cmd, roles, _ in policies] == [
        (cmd, ["authenticated"]) for cmd in ("DELETE", "INSERT", "SELECT", "UPDATE")
    ]
    # `(select auth.uid())`: an InitPlan evaluated once per statement, not once per row.
    assert all("SELECT auth.uid()" in rule for _, _, rule in policies)
