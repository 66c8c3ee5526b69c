"""Alembic environment: migrations run over the session-mode or direct URL, never the
transaction pooler (DDL, advisory locks and long transactions belong on a real session)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import URL

from shared.db import build_engine, detect_mode, to_sqlalchemy_url
from shared.models import Base
from shared.settings import ConnectionMode, get_settings

REFUSAL = (
    "Migrations need a session-mode (port 5432) or direct database URL: set DIRECT_DATABASE_URL. "
    "They do not run through the transaction pooler."
)


def migration_url() -> URL:
    """DIRECT_DATABASE_URL, or DATABASE_URL when that is not a transaction pooler."""
    settings = get_settings()
    if settings.direct_database_url is not None:
        return to_sqlalchemy_url(settings.direct_database_url.get_secret_value())
    if settings.database_url is not None:
        url = to_sqlalchemy_url(settings.database_url.get_secret_value())
        mode = settings.db_mode if settings.db_mode is not ConnectionMode.AUTO else detect_mode(url)
        if mode is not ConnectionMode.TRANSACTION:
            return url
    raise SystemExit(REFUSAL)


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
    settings = get_settings().model_copy(
        update={"db_statement_timeout_ms": 0, "db_application_name": "alembic"}
    )
    engine = build_engine(migration_url(), settings, ConnectionMode.DIRECT)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=Base.metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
