"""Apply the Alembic migrations over a session-mode or direct URL, never the pooler.

    python -m infra.migrate     # `make migrate`

The URL is `shared._database_url.url_for(Purpose.MIGRATIONS)`: DIRECT_DATABASE_URL from the
environment or `.env`, read as the functions read their settings. When neither that nor
DATABASE_URL is set anywhere, the local stack of `make dev` / `make stack-up`. The database
migrated is named (host, port, database; never the password) before anything runs, and a
refused, missing or unreachable database is one line on stderr, not a traceback.

Alembic's env.py resolves the URL the same way (`migration_url`), so `alembic upgrade heads`,
`alembic upgrade heads --sql`, `alembic check` and `alembic revision --autogenerate` all reach
the same database.

The migrations are branches: `platform` (Supabase's roles and auth functions where missing) and
one per function (`items`), each function's depending on the platform's. `make migration
MSG=... [FUNCTION=...]` (`python -m infra.migrate revision`) writes the next revision on the
function's branch, or starts the branch for a function that has none yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack, config_from_env
from shared._database_url import Purpose, url_for
from shared._errors import DatabaseConfigError
from shared._settings import get_settings

__all__ = [
    "PLATFORM_BRANCH",
    "URL_ATTRIBUTE",
    "alembic_config",
    "describe",
    "migration_url",
    "new_revision",
    "refusal",
    "unreachable",
    "upgrade",
]

URL_ATTRIBUTE = "database_url"
"""Where `upgrade` hands env.py its URL: the process environment is never written to."""

PLATFORM_BRANCH = "platform"
"""The branch every function's migrations depend on: roles and auth functions for RLS."""


def alembic_config(url: URL | None = None) -> Config:
    """The project's Alembic config (pyproject.toml), carrying `url` to env.py when given."""
    config = Config(toml_file=str(PROJECT_ROOT / "pyproject.toml"))
    if url is not None:
        config.attributes[URL_ATTRIBUTE] = url
    return config


def _uses_the_local_stack() -> bool:
    settings = get_settings()
    return settings.database_url is None and settings.direct_database_url is None


def migration_url() -> URL:
    """The settings' migrations URL or, when no database URL is configured, the local stack's."""
    if _uses_the_local_stack():
        return url_for(Purpose.MIGRATIONS, LocalStack(config_from_env()).direct_url())
    return url_for(Purpose.MIGRATIONS, settings=get_settings())


def describe(url: URL) -> str:
    """Where a URL leads, without its credentials."""
    return f"database {url.database or 'postgres'} on {url.host or 'localhost'}:{url.port or 5432}"


def unreachable(url: URL, error: BaseException) -> str:
    """One line for a failed connection; libpq's reason names neither the URL nor the password."""
    orig = getattr(error, "orig", None) or error
    first_line = (str(orig).strip().splitlines() or ["no reason given"])[0]
    reason = first_line.rsplit("failed: ", 1)[-1].strip()
    return f"Cannot reach the {describe(url)}: {reason}"


def refusal(error: DBAPIError) -> str | None:
    """One line for a statement the migrating role lacks the privilege for (SQLSTATE 42501),
    with Postgres's hint, which says what to grant; None for any other error."""
    orig = error.orig
    if not isinstance(orig, psycopg.errors.InsufficientPrivilege):
        return None
    hint = f": {orig.diag.message_hint}" if orig.diag.message_hint else ""
    return f"{orig.diag.message_primary or 'permission denied'}{hint}"


def upgrade(url: str | URL | None = None, revision: str = "heads") -> URL:
    """Upgrade the database behind `url` (or `migration_url()`); return the URL it used.

    Raises DatabaseConfigError for a URL that cannot serve migrations and CommandError (one
    line) when the database cannot be reached or Alembic refuses.
    """
    checked = migration_url() if url is None else url_for(Purpose.MIGRATIONS, url)
    command.upgrade(alembic_config(checked), revision)
    return checked


def new_revision(message: str, function: str | None = None, config: Config | None = None) -> Path:
    """Autogenerate the next revision on `function`'s branch; return the file it wrote.

    Without `function`, the one function that has migrations. A function without any starts
    its own branch, labelled with its name and depending on the platform's latest revision.
    """
    config = config or alembic_config()
    script = ScriptDirectory.from_config(config)
    branches = {label for rev in script.walk_revisions() for label in rev.branch_labels}
    functions = sorted(branches - {PLATFORM_BRANCH})
    if function is None:
        if len(functions) != 1:
            which = f"several functions have migrations ({', '.join(functions)})"
            example = functions[0] if functions else "orders"
            raise CommandError(
                f"{which if functions else 'no function has migrations yet'}: say whose, e.g."
                f' make migration MSG="{message}" FUNCTION={example}'
            )
        function = functions[0]
    if function in branches:
        written = command.revision(config, message, autogenerate=True, head=f"{function}@head")
    else:
        platform = script.get_revision(f"{PLATFORM_BRANCH}@head")
        written = command.revision(
            config,
            message,
            autogenerate=True,
            head="base",
            branch_label=function,
            depends_on=platform.revision if platform else None,
        )
    [script_written] = written if isinstance(written, list) else [written]
    if script_written is None:
        raise CommandError("Alembic wrote no revision")
    return Path(script_written.path)


def main(argv: list[str] | None = None) -> int:
    """`make migrate` (no arguments), `make migration` (`revision -m ...`); errors in one line."""
    parser = argparse.ArgumentParser(prog="python -m infra.migrate")
    commands = parser.add_subparsers(dest="command")
    revision = commands.add_parser("revision", help="autogenerate a revision from the models")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--function", help="whose branch (default: the only function's)")
    args = parser.parse_args(argv)
    if args.command == "revision":
        try:
            written = new_revision(args.message, args.function)
        except (DatabaseConfigError, CommandError) as error:
            sys.stderr.write(f"migration: {error}\n")
            return 1
        sys.stderr.write(f"migration: wrote {written}; review it before committing\n")
        return 0
    return _upgrade_main()


def _upgrade_main() -> int:
    try:
        url = migration_url()
        target = f"the {describe(url)}"
        if _uses_the_local_stack():
            target = f"the local stack's {describe(url)} (no DIRECT_DATABASE_URL set)"
        sys.stderr.write(f"migrate: upgrading {target} to the latest migration\n")
        upgrade(url)
    except (DatabaseConfigError, CommandError) as error:
        sys.stderr.write(f"migrate: {error}\n")
        return 1
    sys.stderr.write("migrate: done\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
