"""The shapes a database secret may take; no network."""

from __future__ import annotations

import pytest

from shared._errors import AppError, DatabaseConfigError, DatabaseSecretNotSetError
from shared._secrets import parse_secret

URL = "postgresql://postgres.ref:p%40ss@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"


@pytest.mark.parametrize("value", [URL, f"  {URL}\n", f'{{"url": "{URL}"}}'])
def test_url_or_json_with_url(value: str) -> None:
    assert parse_secret(value) == URL


def test_rds_rotation_fields_become_an_escaped_url() -> None:
    value = (
        '{"username": "app", "password": "p@ss:w/rd", "host": "proxy.example",'
        ' "port": 5432, "dbname": "shop", "engine": "postgres"}'
    )

    assert parse_secret(value) == "postgresql://app:p%40ss%3Aw%2Frd@proxy.example:5432/shop"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("hunter2-secret", DatabaseSecretNotSetError),  # no URL: the stack's placeholder
        ('{"password": "hunter2-secret"}', DatabaseConfigError),
        ("{oops", DatabaseConfigError),
    ],
)
def test_malformed_secrets_are_refused_without_quoting_them(
    value: str, error: type[AppError]
) -> None:
    with pytest.raises(error) as caught:
        parse_secret(value)

    assert "hunter2" not in str(caught.value)
