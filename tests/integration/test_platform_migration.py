"""The migrations run unchanged where Supabase's roles and auth functions already exist.

Supabase is imitated by creating `auth.uid()`, `auth.role()` and `auth.jwt()` first, with bodies
of our own that carry a marker: the migrations must leave them exactly as they were, twice over.
The roles belong to the whole cluster, so the test session's own migration created them; their
attributes must not change either. A login role that is neither superuser nor member of the
three roles gets the memberships it needs, and, owning the table, still sees no row through it
until it acts as a user: row-level security is forced.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg import sql

from infra.local_stack import LocalStack
from infra.migrate import alembic_config, upgrade
from infra.migrate import main as migrate_main
from shared._database_url import to_sqlalchemy_url
from tests.fixtures.identities import new_user
from tests.fixtures.stack import reset_caches

MARKER = f"supabase-own-{uuid.uuid4().hex[:8]}"
SUPABASE_LIKE_AUTH = f"""
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
    AS $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid /* {MARKER} */ $$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE
    AS $$ select '{MARKER}'::text $$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE
    AS $$ select jsonb_build_object('marker', '{MARKER}') $$;
"""
AUTH_FUNCTIONS = ("auth.uid()", "auth.role()", "auth.jwt()")
API_ROLES = ("anon", "authenticated", "service_role")


def direct(database: LocalStack) -> psycopg.Connection[Any]:
    return psycopg.connect(database.direct_url(), autocommit=True)


def auth_functions(database: LocalStack) -> dict[str, str]:
    with direct(database) as conn:
        definition = "SELECT pg_get_functiondef(%s::regprocedure)"
        return {name: str(conn.execute(definition, (name,)).fetchone()) for name in AUTH_FUNCTIONS}


def api_roles(database: LocalStack) -> list[tuple[Any, ...]]:
    with direct(database) as conn:
        return conn.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls, rolconfig"
            " FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
            (list(API_ROLES),),
        ).fetchall()


def downgrade_to_base(database: LocalStack) -> None:
    command.downgrade(alembic_config(to_sqlalchemy_url(database.direct_url())), "base")


def test_supabases_auth_functions_and_roles_are_kept_as_they_are(
    empty_database: LocalStack,
) -> None:
    with direct(empty_database) as conn:
        conn.execute(SUPABASE_LIKE_AUTH)
    functions_before, roles_before = auth_functions(empty_database), api_roles(empty_database)

    upgrade(empty_database.direct_url())
    after_first = auth_functions(empty_database), api_roles(empty_database)
    downgrade_to_base(empty_database)
    upgrade(empty_database.direct_url())  # the platform migration runs a second time
    after_second = auth_functions(empty_database), api_roles(empty_database)

    assert all(MARKER in body for body in functions_before.values())  # the control
    assert after_first == after_second == (functions_before, roles_before)


def test_missing_auth_functions_are_created_with_supabases_behaviour(
    empty_database: LocalStack,
) -> None:
    upgrade(empty_database.direct_url())
    downgrade_to_base(empty_database)  # keeps the platform's objects: they may be shared
    upgrade(empty_database.direct_url())
    user = new_user()

    with direct(empty_database) as conn, conn.transaction():
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (user.claims_json(),))
        row = conn.execute("SELECT auth.uid(), auth.role(), auth.jwt()").fetchone()

    assert row is not None
    uid, role, jwt = row
    assert (str(uid), role, jwt) == (user.user_id, "authenticated", dict(user.claims))


@pytest.fixture
def owned_by_a_plain_login_role(empty_database: LocalStack) -> Iterator[LocalStack]:
    """The empty database, owned by and reached as a new login role that is not a superuser.

    Like a Neon or RDS owner role: it may create roles and tables, but is not a member of the
    API roles (they exist already: the session's migration created them in the cluster).
    """
    name = f"login_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    ident = sql.Identifier(name)
    with direct(empty_database) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                ident, sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(empty_database.config.database), ident
            )
        )
    try:
        yield LocalStack(dataclasses.replace(empty_database.config, user=name, password=password))
    finally:
        with direct(empty_database) as admin:
            admin.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_a_plain_login_role_gets_the_memberships_and_is_held_to_the_policies(
    owned_by_a_plain_login_role: LocalStack,
) -> None:
    database = owned_by_a_plain_login_role
    member_before = memberships(database)

    upgrade(database.direct_url())

    user = new_user()
    with direct(database) as conn:
        with conn.transaction():
            conn.execute(
                "SELECT set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', %s, true)",
                (user.claims_json(),),
            )
            conn.execute("INSERT INTO items (sku, name) VALUES ('mine', 'x')")
            seen_as_user = conn.execute("SELECT count(*) FROM items").fetchone()
        seen_as_table_owner = conn.execute("SELECT count(*) FROM items").fetchone()
        bypasses = conn.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert member_before == dict.fromkeys(API_ROLES, False)
    assert memberships(database) == dict.fromkeys(API_ROLES, True)
    assert seen_as_user == (1,)
    assert (bypasses, seen_as_table_owner) == ((False,), (0,))  # FORCE holds the owner too


def memberships(database: LocalStack) -> dict[str, bool]:
    """Which API roles the login role may switch to (Postgres 15: membership is the right)."""
    with direct(database) as conn:
        rows = conn.execute(
            "SELECT rolname, pg_has_role(rolname, 'MEMBER') FROM pg_roles WHERE rolname = ANY(%s)",
            (list(API_ROLES),),
        ).fetchall()
    return dict(rows)


@pytest.fixture
def without_service_role(empty_database: LocalStack) -> Iterator[None]:
    """The cluster as a new Neon or RDS one is: no service_role (renamed aside, then back;
    one the test created is dropped with its privileges in the test's database)."""
    aside = f"service_role_{uuid.uuid4().hex[:8]}"
    with direct(empty_database) as admin:
        admin.execute(sql.SQL("ALTER ROLE service_role RENAME TO {}").format(sql.Identifier(aside)))
    try:
        yield
    finally:
        with direct(empty_database) as admin:
            if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'service_role'").fetchone():
                admin.execute("DROP OWNED BY service_role")
                admin.execute("DROP ROLE service_role")
            admin.execute(
                sql.SQL("ALTER ROLE {} RENAME TO service_role").format(sql.Identifier(aside))
            )


def test_a_role_that_may_not_create_bypassrls_roles_is_told_what_to_grant_in_one_line(
    without_service_role: None,
    owned_by_a_plain_login_role: LocalStack,
    empty_database: LocalStack,  # the same database, reached as the superuser
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = owned_by_a_plain_login_role
    login = database.config.user
    monkeypatch.setenv("DIRECT_DATABASE_URL", database.direct_url())
    reset_caches()
    request.addfinalizer(reset_caches)  # before the variable is restored: nothing keeps it

    exit_code = migrate_main([])

    refused = capsys.readouterr().err.splitlines()[-1]
    assert exit_code == 1
    assert refused == (
        f"migrate: role {login} may not create Supabase's API roles (must be superuser to "
        "create bypassrls users): as a superuser, run once: CREATE ROLE service_role NOLOGIN "
        f"NOINHERIT BYPASSRLS; GRANT anon, authenticated, service_role TO {login}; then migrate "
        "again"
    )
    with direct(database) as conn:
        assert conn.execute("SELECT to_regclass('items')").fetchone() == (None,)
    # What the line says to run, run as a superuser, is enough.
    statements = refused.split("run once: ", 1)[1].removesuffix("; then migrate again")
    with direct(empty_database) as admin:
        admin.execute(statements.encode())  # a script: SQL composed by the migration
    assert migrate_main([]) == 0
