"""Settings: defaults, environment, validation; no network."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from sqlalchemy.pool import NullPool

from shared._engine import forget_engines, get_engine
from shared._settings import ConnectionMode, Settings, get_settings
from tests.fixtures.engines import connect_params


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DB_", "DATABASE_", "DIRECT_DATABASE_", "AWS_LAMBDA_")):
            monkeypatch.delenv(name)
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
        "postgresql://app:pw@db.internal.example:5432/app",  # nothing tells: transaction mode
    ],
)
def test_defaults_are_safe_for_a_transaction_pooler(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """With DATABASE_URL alone, the functions' engine holds no pool, never prepares a
    statement and gives up connecting quickly."""
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    forget_engines()
    try:
        engine = get_engine()
        params = connect_params(engine)
    finally:
        forget_engines()

    assert Settings(_env_file=None).db_mode is ConnectionMode.AUTO
    assert isinstance(engine.pool, NullPool)
    assert params["prepare_threshold"] is None
    assert params["connect_timeout"] <= 5
    assert params["application_name"] == "local"


def test_environment_is_read_and_the_url_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db:6543/postgres")
    monkeypatch.setenv("DB_MODE", "session")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "svc-dev-items")

    settings = get_settings()

    assert settings.db_mode is ConnectionMode.SESSION
    assert settings.db_application_name == "svc-dev-items"
    assert settings.database_url is not None
    assert "hunter2" not in repr(settings)
    assert settings.database_url.get_secret_value().endswith("@db:6543/postgres")


def test_settings_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "9")

    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().db_connect_timeout == 9


@pytest.mark.parametrize("value", ["1", "31", "soon"])
def test_connect_timeout_is_bounded(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", value)

    with pytest.raises(ValidationError):
        Settings(_env_file=None)
