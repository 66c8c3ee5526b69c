"""Supabase's API roles and auth functions, only where they are missing

On Supabase all of this exists already and is left exactly as it is; on a local stack, Neon or
RDS this creates what row-level security policies written for Supabase need:

- the roles `anon` and `authenticated` (NOLOGIN NOINHERIT) and `service_role` (NOLOGIN
  NOINHERIT BYPASSRLS), as Supabase creates them (supabase/postgres,
  migrations/db/init-scripts/00000000000000-initial-schema.sql);
- the schema `auth` with `auth.uid()`, `auth.role()` and `auth.jwt()`, with the bodies of
  supabase/auth's migrations 20220224000811_update_auth_functions and
  20220531120530_add_auth_jwt_function: they read `request.jwt.claims`, which `shared._driver`
  sets per transaction. Each is created only when no function of that name exists, so
  Supabase's own (or a later version of it) is never replaced;
- membership of the migrating role (`current_user`, the functions' login role) in the three
  roles where it may not yet switch to them, so transactions can `SET ROLE`;
- USAGE on schema `public` for the three roles.

Downgrade drops nothing: roles belong to the whole cluster, not to this database, and other
databases (or Supabase's own services) may own objects or privileges through them; and a
`DROP FUNCTION auth.uid()` would have to cascade to every policy in the database that calls it,
which would silently leave those tables open. Each table's own migration undoes its policies.

Revision ID: platform_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "platform_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("platform",)
depends_on: str | Sequence[str] | None = None

# A role that may not create them (only a superuser may create a BYPASSRLS role) is refused
# with the statements a superuser runs once, in the message's hint: infra/migrate.py prints it.
CREATE_MISSING_ROLES = """
DO $platform$
DECLARE
    missing text[] := ARRAY[]::text[];
    statement text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        missing := missing || 'CREATE ROLE anon NOLOGIN NOINHERIT'::text;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        missing := missing || 'CREATE ROLE authenticated NOLOGIN NOINHERIT'::text;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        missing := missing || 'CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS'::text;
    END IF;
    BEGIN
        FOREACH statement IN ARRAY missing LOOP
            EXECUTE statement;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = format('role %I may not create Supabase''s API roles (%s)',
                             current_user, SQLERRM),
            HINT = format('as a superuser, run once: %s; GRANT anon, authenticated, service_role'
                          ' TO %I; then migrate again', array_to_string(missing, '; '),
                          current_user);
    END;
END
$platform$
"""

# From Postgres 16 a member may be denied SET ROLE (the SET option); before, membership is it.
GRANT_MISSING_MEMBERSHIPS = """
DO $platform$
DECLARE
    api_role text;
    can_switch text := CASE WHEN current_setting('server_version_num')::int >= 160000
                            THEN 'SET' ELSE 'MEMBER' END;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT pg_catalog.pg_has_role(current_user, api_role, can_switch) THEN
            EXECUTE 'GRANT ' || quote_ident(api_role) || ' TO CURRENT_USER';
        END IF;
    END LOOP;
END
$platform$
"""

# Supabase's bodies (supabase/auth, see above), each read from the transaction's claims.
SUPABASE_AUTH_FUNCTIONS = {
    "auth.uid()": (
        "uuid",
        "coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),"
        " (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid",
    ),
    "auth.role()": (
        "text",
        "coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),"
        " (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text",
    ),
    "auth.jwt()": (
        "jsonb",
        "coalesce(nullif(current_setting('request.jwt.claim', true), ''),"
        " nullif(current_setting('request.jwt.claims', true), ''))::jsonb",
    ),
}


def create_missing_auth() -> str:
    """The auth schema and each function, only where no object of that name exists."""
    functions = "".join(
        f"""
    IF to_regprocedure('{signature}') IS NULL THEN
        CREATE FUNCTION {signature} RETURNS {returns} LANGUAGE sql STABLE
            AS $function$ select {body} $function$;
    END IF;"""
        for signature, (returns, body) in SUPABASE_AUTH_FUNCTIONS.items()
    )
    return f"""
DO $platform$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;{functions}
END
$platform$
"""


def upgrade() -> None:
    op.execute(CREATE_MISSING_ROLES)
    op.execute(GRANT_MISSING_MEMBERSHIPS)
    op.execute(create_missing_auth())
    op.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role")


def downgrade() -> None:
    """Nothing: see the module's docstring."""
