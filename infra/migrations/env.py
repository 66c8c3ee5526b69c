"""Alembic environment: migrations run over the session-mode or direct URL, never the
transaction pooler (DDL, advisory locks and long transactions belong on a real session).

The URL comes from `infra.migrate.upgrade` (a config attribute) or, on Alembic's command line,
from `infra.migrate.migration_url()`; both end in `shared._database_url.url_for`, so every path,
`--sql` included, refuses the same URLs with the same message. Refusals, failed connections and
statements the role lacks the privilege for are CommandErrors, which Alembic's command line
prints as one line. Migrations act as the login role, which owns the tables
(`shared._identity.acting_as_login_role`): the platform's driver would otherwise switch every
transaction to `anon`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

from alembic import context
from alembic.util import CommandError
from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

import functions
from infra.migrate import URL_ATTRIBUTE, refusal, unreachable
from infra.migrate import migration_url as configured_migration_url
from shared._database_url import Purpose, url_for
from shared._engine import build_engine
from shared._errors import DatabaseConfigError
from shared._identity import acting_as_login_role
from shared._models import Base
from shared._settings import ConnectionMode, get_settings


def import_function_models() -> None:
    """Import every `functions/<name>/models.py`, so Base.metadata holds every function's tables.

    Autogenerate and `alembic check` compare that metadata with the database; a function added,
    renamed or removed needs no change here.
    """
    for function in pkgutil.iter_modules(functions.__path__):
        module = f"functions.{function.name}.models"
        if function.ispkg and importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


import_function_models()


def migration_url() -> URL:
    """The URL `upgrade` was given, else the one the settings (or the local stack) provide."""
    given = context.config.attributes.get(URL_ATTRIBUTE)
    try:
        return configured_migration_url() if given is None else url_for(Purpose.MIGRATIONS, given)
    except DatabaseConfigError as error:
        raise CommandError(str(error)) from None


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=migration_url(),
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations in one transaction, with no statement timeout."""
    url = migration_url()
    settings = get_settings().model_copy(
        update={"db_statement_timeout_ms": 0, "db_application_name": "alembic"}
    )
    engine = build_engine(url, settings, ConnectionMode.DIRECT)
    # From the dialect's first query on: before the platform migration, `anon` may not exist.
    with acting_as_login_role():
        try:
            try:
                connection = engine.connect()
            except (OperationalError, InterfaceError) as error:
                raise CommandError(unreachable(url, error)) from None
            with connection:
                context.configure(connection=connection, target_metadata=Base.metadata)
                try:
                    with context.begin_transaction():
                        context.run_migrations()
                except DBAPIError as error:
                    if refused := refusal(error):
                        raise CommandError(refused) from None
                    raise
        finally:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
