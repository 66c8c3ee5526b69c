"""The test session: independent of the machine it runs on, and marked by directory.

Fixtures live in plugin modules under tests/fixtures. Here:

- the session ignores the developer's `.env` and every DATABASE_*, DIRECT_DATABASE_*, DB_*,
  SUPABASE_*, AUTH_* and AWS_* variable, so `cp .env.example .env`, an exported DATABASE_URL
  or an AWS profile change nothing; subprocesses (serverless offline) inherit the cleaned
  environment;
- tests/integration, tests/e2e and tests/package are marked `integration`, `e2e` and `package`
  (`make test-unit` runs the rest), and a unit test that asks for the database is an error;
  tests/harness (tests of the test fixtures and bench/) marks its database tests itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared._settings import ENV_FILE_VARIABLE, get_settings

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.browser",
    "tests.fixtures.lambda_events",
    "tests.fixtures.proxy",
    "tests.fixtures.reporting",
    "tests.fixtures.stack",
    "tests.fixtures.pool_modes",  # after the stack, which it imports
    "tests.fixtures.tokens",
    "tests.fixtures.identities",  # after the two it imports, so pytest rewrites them first
]

TESTS_DIR = Path(__file__).resolve().parent
USER_VARIABLE_PREFIXES = ("DATABASE_", "DIRECT_DATABASE_", "DB_", "SUPABASE_", "AUTH_", "AWS_")
MARKED_DIRECTORIES = ("integration", "e2e", "package")
DATABASE_FIXTURES = frozenset({"stack", "database"})


def isolated_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without the user's database, Supabase and AWS settings, reading no `.env`."""
    kept = {
        name: value
        for name, value in environ.items()
        if not name.startswith(USER_VARIABLE_PREFIXES)
    }
    return kept | {
        ENV_FILE_VARIABLE: "",
        # boto3 must find no profile, no credentials file and no instance role.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def environment_outside_the_session() -> dict[str, str]:
    """This process's environment as a developer's shell would have it without any settings:
    for subprocesses that must read `.env` or variables as `make` commands do."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(USER_VARIABLE_PREFIXES) and name != ENV_FILE_VARIABLE
    }


@pytest.fixture(scope="session", autouse=True)
def _independent_of_the_developer_environment() -> Iterator[None]:
    """Run the whole session in `isolated_environment(os.environ)`."""
    with pytest.MonkeyPatch.context() as env:
        wanted = isolated_environment(dict(os.environ))
        for name in set(os.environ) - set(wanted):
            env.delenv(name)
        for name, value in wanted.items():
            env.setenv(name, value)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its directory; keep the unit tests free of the database."""
    for item in items:
        directory = item.path.relative_to(TESTS_DIR).parts[0]
        if directory in MARKED_DIRECTORIES:
            item.add_marker(directory)
        elif DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())) and (
            item.get_closest_marker("integration") is None
        ):
            raise pytest.UsageError(
                f"{item.nodeid} uses the database: move it to tests/integration"
            )
