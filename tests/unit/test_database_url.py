"""Which URL serves which purpose, and URLs that cannot be parsed; no network."""

from __future__ import annotations

import os
from typing import Any

import pytest

from shared._database_url import (
    FUNCTIONS_NEED_THE_POOLER,
    MIGRATIONS_NEED_A_SESSION,
    Purpose,
    detect_mode,
    to_sqlalchemy_url,
    url_for,
)
from shared._errors import DatabaseConfigError
from shared._settings import ConnectionMode, Settings

PASSWORD = "hunter2"
SUPABASE = "postgres://postgres.ref:hunter2@aws-0-eu-central-1.pooler.supabase.com"
TRANSACTION_POOLER = f"{SUPABASE}:6543/postgres"
SESSION_POOLER = f"{SUPABASE}:5432/postgres"
DIRECT = "postgresql://postgres:hunter2@db.abcdefghijklmnopqrst.supabase.co:5432/postgres"
NEON_POOLED = "postgresql://app:hunter2@ep-cool-123456-pooler.eu-central-1.aws.neon.tech/db"
LOCAL_POOLER = "postgresql://postgres:hunter2@127.0.0.1:6543/postgres"
LOCAL_POSTGRES = "postgresql://postgres:hunter2@127.0.0.1:54322/postgres"


@pytest.fixture(autouse=True)
def no_database_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts, not what the session's database fixture exported."""
    for name in list(os.environ):
        if name.startswith(("DATABASE_", "DIRECT_DATABASE_", "DB_")):
            monkeypatch.delenv(name)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize("url", [SESSION_POOLER, DIRECT, LOCAL_POSTGRES])
def test_migrations_accept_session_and_direct_urls(url: str) -> None:
    assert url_for(Purpose.MIGRATIONS, url).password == PASSWORD


@pytest.mark.parametrize("url", [TRANSACTION_POOLER, NEON_POOLED, LOCAL_POOLER])
def test_migrations_refuse_a_transaction_pooler_without_echoing_it(url: str) -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        url_for(Purpose.MIGRATIONS, url)

    assert str(caught.value) == MIGRATIONS_NEED_A_SESSION
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("url", [SESSION_POOLER, DIRECT])
def test_functions_refuse_what_is_recognisably_not_a_transaction_pooler(url: str) -> None:
    with pytest.raises(DatabaseConfigError, match="transaction-pooler URL") as caught:
        url_for(Purpose.FUNCTIONS, url)

    assert str(caught.value) == FUNCTIONS_NEED_THE_POOLER


@pytest.mark.parametrize("url", [TRANSACTION_POOLER, NEON_POOLED, LOCAL_POOLER])
def test_functions_accept_a_transaction_pooler(url: str) -> None:
    assert url_for(Purpose.FUNCTIONS, url).drivername == "postgresql+psycopg"


def test_migrations_prefer_direct_database_url_from_the_settings() -> None:
    configured = settings(database_url=TRANSACTION_POOLER, direct_database_url=SESSION_POOLER)

    assert url_for(Purpose.MIGRATIONS, settings=configured).port == 5432
    assert url_for(Purpose.FUNCTIONS, settings=configured).port == 6543


def test_a_transaction_pooler_in_direct_database_url_is_refused() -> None:
    configured = settings(direct_database_url=TRANSACTION_POOLER)

    with pytest.raises(DatabaseConfigError) as caught:
        url_for(Purpose.MIGRATIONS, settings=configured)

    assert str(caught.value) == MIGRATIONS_NEED_A_SESSION


@pytest.mark.parametrize(
    ("database_url", "db_mode", "usable"),
    [
        (SESSION_POOLER, ConnectionMode.AUTO, True),  # recognisably session mode
        (LOCAL_POSTGRES, ConnectionMode.AUTO, False),  # unknown hosts count as transaction mode
        (LOCAL_POSTGRES, ConnectionMode.DIRECT, True),  # unless DB_MODE says otherwise
        (SESSION_POOLER, ConnectionMode.TRANSACTION, False),
    ],
)
def test_database_url_stands_in_for_migrations_only_when_not_transaction_mode(
    database_url: str, db_mode: ConnectionMode, usable: bool
) -> None:
    configured = settings(database_url=database_url, db_mode=db_mode)

    if usable:
        assert url_for(Purpose.MIGRATIONS, settings=configured).password == PASSWORD
    else:
        with pytest.raises(DatabaseConfigError) as caught:
            url_for(Purpose.MIGRATIONS, settings=configured)
        assert str(caught.value) == MIGRATIONS_NEED_A_SESSION


@pytest.mark.parametrize("purpose", list(Purpose))
def test_no_url_configured_names_the_variable(purpose: Purpose) -> None:
    variable = "DIRECT_DATABASE_URL" if purpose is Purpose.MIGRATIONS else "DATABASE_URL"

    with pytest.raises(DatabaseConfigError, match=variable):
        url_for(purpose, settings=settings())


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:hunter2@db.example.com:port/postgres",  # port not a number
        "postgresql://postgres:hunter2@db.example.com:99999/postgres",  # port out of range
        "postgresql://postgres:hunter2@db.example.com:0/postgres",
        "postgresql://postgres:hun@ter2@db.example.com:5432/postgres",  # `@` unescaped
        "postgresql://postgres:hun@ter2@db.example.com/postgres",  # `@`, no port
        "postgresql://postgres:hun@ter:2@db.example.com:5432/postgres",  # `@` and `:`
        "postgresql://postgres:hun@ter/2@db.example.com:5432/postgres",  # `@` and `/`
        "postgresql://postgres:hunter2@[::1:5432/postgres",  # unclosed IPv6 bracket
        "hunter2 is not a url",
    ],
)
def test_unparseable_urls_are_a_config_error_that_never_echoes_them(url: str) -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        to_sqlalchemy_url(url)

    message = str(caught.value)
    assert "URL-escape the password" in message
    assert "hunter2" not in message
    assert "ter2" not in message


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://postgres:hun:ter2@db.example.com:5432/postgres", "hun:ter2"),
        ("postgresql://postgres:hun/ter2@db.example.com:5432/postgres", "hun/ter2"),
        ("postgresql://postgres:hun%40ter2@db.example.com:5432/postgres", "hun@ter2"),
    ],
)
def test_passwords_that_parse_unambiguously_are_kept_whole(url: str, password: str) -> None:
    parsed = to_sqlalchemy_url(url)

    assert (parsed.host, parsed.port, parsed.password) == ("db.example.com", 5432, password)


def test_an_unparseable_url_in_the_settings_is_refused_for_either_purpose() -> None:
    configured = settings(database_url="postgresql://u:hunter2@host:port/db")

    for purpose in Purpose:
        with pytest.raises(DatabaseConfigError) as caught:
            url_for(purpose, settings=configured)
        assert "hunter2" not in str(caught.value)


# --- parsing: any Postgres scheme becomes psycopg 3, the password unescaped ---------------

# A password with characters a URL must escape.
ESCAPED_PASSWORD = "p@ss:w/rd"
ESCAPED = "p%40ss%3Aw%2Frd"
REF = "abcdefghijklmnopqrst"
ESCAPED_POOLER = (
    f"postgres://postgres.{REF}:{ESCAPED}@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_url_selects_psycopg_3_and_unescapes_the_password(scheme: str) -> None:
    url = to_sqlalchemy_url(ESCAPED_POOLER.replace("postgres://", f"{scheme}://"))

    assert url.drivername == "postgresql+psycopg"
    assert url.username == f"postgres.{REF}"
    assert url.password == ESCAPED_PASSWORD


def test_unparseable_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        to_sqlalchemy_url(f"not a url {ESCAPED_PASSWORD}")

    assert ESCAPED_PASSWORD not in str(caught.value)


def test_non_postgres_url_is_refused() -> None:
    with pytest.raises(DatabaseConfigError, match="postgres"):
        to_sqlalchemy_url(f"mysql://root:{ESCAPED}@localhost/db")


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        (TRANSACTION_POOLER, ConnectionMode.TRANSACTION),
        (SESSION_POOLER, ConnectionMode.SESSION),
        (DIRECT, ConnectionMode.DIRECT),
        (LOCAL_POOLER, ConnectionMode.TRANSACTION),
        (
            "postgresql://u:p@ep-cool-name-123456-pooler.eu-central-1.aws.neon.tech/db",
            ConnectionMode.TRANSACTION,
        ),
        ("postgresql://u:p@some-host.example:5432/db", ConnectionMode.TRANSACTION),
    ],
)
def test_mode_is_guessed_from_the_url(url: str, mode: ConnectionMode) -> None:
    assert detect_mode(to_sqlalchemy_url(url)) == mode
