"""Every way of running migrations reaches the database it should, or refuses in one line.

`make migrate` (python -m infra.migrate) and Alembic's command line run as a developer runs
them: in a folder with its own `.env`, with the developer's variables, outside the test
session's isolation. Each test migrates a database of its own on the local stack. The stage
path (the stage's secret) is in test_stage.py and refuses with the same message.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.util import CommandError

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack
from infra.migrate import alembic_config, upgrade
from shared._database_url import MIGRATIONS_NEED_A_SESSION
from shared._errors import DatabaseConfigError
from shared._settings import get_settings
from tests.conftest import environment_outside_the_session
from tests.fixtures.stack import TEST_PASSWORD, free_port

SUPAVISOR_TRANSACTION = (
    "postgres://postgres.ref:hunter2@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
)
HEAD = "0003"  # the items head; Alembic does not list the platform head it depends on


def version_of(database: LocalStack) -> str | None:
    with psycopg.connect(database.direct_url()) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def run(
    command_line: list[str],
    folder: Path,
    env_file: dict[str, str] | None = None,
    **variables: str,
) -> subprocess.CompletedProcess[str]:
    """Run a command from `folder` (with that `.env`) as a developer's shell would."""
    if env_file is not None:
        (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
    env = environment_outside_the_session() | variables | {"PYTHONPATH": str(PROJECT_ROOT)}
    # Alembic's command line finds pyproject.toml through this when run outside the root.
    env["ALEMBIC_CONFIG"] = str(PROJECT_ROOT / "pyproject.toml")
    return subprocess.run(
        command_line, cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


MAKE_MIGRATE = [sys.executable, "-m", "infra.migrate"]
ALEMBIC = [str(Path(sys.executable).parent / "alembic")]


def test_make_migrate_reads_dotenv(empty_database: LocalStack, tmp_path: Path) -> None:
    done = run(
        MAKE_MIGRATE,
        tmp_path,
        env_file={
            "DATABASE_URL": empty_database.pooler_url(),
            "DIRECT_DATABASE_URL": empty_database.direct_url(),
        },
    )

    assert done.returncode == 0, done.stderr
    port = empty_database.config.postgres_port
    assert f"database {empty_database.config.database} on 127.0.0.1:{port}" in done.stderr
    assert version_of(empty_database) == HEAD


def test_direct_database_url_in_the_environment_wins_over_dotenv(
    empty_database: LocalStack, stack: LocalStack, tmp_path: Path
) -> None:
    other = LocalStack(dataclasses.replace(stack.config, database="nonexistent_in_env_file"))

    done = run(
        MAKE_MIGRATE,
        tmp_path,
        env_file={"DIRECT_DATABASE_URL": other.direct_url()},
        DIRECT_DATABASE_URL=empty_database.direct_url(),
    )

    assert done.returncode == 0, done.stderr
    assert version_of(empty_database) == HEAD


ALEMBIC_SQL = [*ALEMBIC, "upgrade", "heads", "--sql"]
REFUSING_PATHS = {
    "make migrate, .env": (MAKE_MIGRATE, {"DIRECT_DATABASE_URL": SUPAVISOR_TRANSACTION}, {}),
    "make migrate, environment": (
        MAKE_MIGRATE,
        None,
        {"DIRECT_DATABASE_URL": SUPAVISOR_TRANSACTION},
    ),
    "make migrate, only a pooler DATABASE_URL": (
        MAKE_MIGRATE,
        {"DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:56543/postgres"},
        {},
    ),
    "alembic upgrade heads": (
        [*ALEMBIC, "upgrade", "heads"],
        {"DIRECT_DATABASE_URL": SUPAVISOR_TRANSACTION},
        {},
    ),
    "alembic upgrade heads --sql, .env": (
        ALEMBIC_SQL,
        {"DIRECT_DATABASE_URL": SUPAVISOR_TRANSACTION},
        {},
    ),
    "alembic upgrade heads --sql, environment": (
        ALEMBIC_SQL,
        None,
        {"DIRECT_DATABASE_URL": SUPAVISOR_TRANSACTION},
    ),
}


@pytest.mark.parametrize("path", REFUSING_PATHS)
def test_every_path_refuses_the_transaction_pooler_with_the_same_line(
    tmp_path: Path, path: str
) -> None:
    command_line, env_file, variables = REFUSING_PATHS[path]

    done = run(command_line, tmp_path, env_file, **variables)

    # Alembic's command line prints `FAILED: <message>` on stdout; infra.migrate on stderr.
    [line] = (done.stdout + done.stderr).splitlines()
    assert done.returncode != 0
    assert line.endswith(f": {MIGRATIONS_NEED_A_SESSION}")
    assert "hunter2" not in line


def test_upgrade_refuses_the_transaction_pooler_with_the_same_message() -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        upgrade(SUPAVISOR_TRANSACTION)

    assert str(caught.value) == MIGRATIONS_NEED_A_SESSION


def test_sql_mode_reads_dotenv_and_needs_no_connection(tmp_path: Path) -> None:
    unreachable = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/postgres"

    done = run(ALEMBIC_SQL, tmp_path, env_file={"DIRECT_DATABASE_URL": unreachable})

    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE items" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.parametrize("command_line", [MAKE_MIGRATE, [*ALEMBIC, "upgrade", "heads"]])
def test_an_unreachable_database_is_one_line(tmp_path: Path, command_line: list[str]) -> None:
    port = free_port()

    done = run(
        command_line,
        tmp_path,
        DIRECT_DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres",
    )

    output = done.stdout + done.stderr
    assert done.returncode != 0
    [error] = [line for line in output.splitlines() if "Cannot reach" in line]
    assert error.endswith(
        f"Cannot reach the database postgres on 127.0.0.1:{port}: Connection refused"
    )
    assert "Traceback" not in output
    assert "hunter2" not in output


def test_a_missing_database_is_one_line(stack: LocalStack, tmp_path: Path) -> None:
    missing = LocalStack(dataclasses.replace(stack.config, database="no_such_database"))

    done = run(MAKE_MIGRATE, tmp_path, DIRECT_DATABASE_URL=missing.direct_url())

    assert done.returncode == 1
    [error] = [line for line in done.stderr.splitlines() if "Cannot reach" in line]
    assert error.endswith('database "no_such_database" does not exist')
    assert "Traceback" not in done.stderr
    assert TEST_PASSWORD not in done.stderr


def test_with_no_url_anywhere_make_migrate_uses_the_local_stack(tmp_path: Path) -> None:
    port = free_port()

    done = run(MAKE_MIGRATE, tmp_path, env_file={}, LOCAL_POSTGRES_PORT=str(port))

    assert done.returncode == 1
    assert f"the local stack's database postgres on 127.0.0.1:{port}" in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"migrate: Cannot reach the database postgres on 127.0.0.1:{port}: Connection refused"
    )


def test_upgrade_leaves_the_process_environment_alone(empty_database: LocalStack) -> None:
    before = dict(os.environ)
    settings = get_settings()

    upgrade(empty_database.direct_url())

    assert dict(os.environ) == before
    assert get_settings() is settings
    assert version_of(empty_database) == HEAD


@pytest.fixture
def empty_versions(tmp_path: Path) -> Path:
    """A versions folder with no migrations, so Alembic sees the models against nothing."""
    versions = tmp_path / "versions"
    versions.mkdir()
    return versions


def test_make_migration_autogenerates_from_the_models(
    empty_database: LocalStack, empty_versions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `make migration` runs it: the URL from the settings, not handed in.
    monkeypatch.setenv("DIRECT_DATABASE_URL", empty_database.direct_url())
    get_settings.cache_clear()
    config = alembic_config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(empty_versions))
    try:
        command.revision(config, message="create items", autogenerate=True)
    finally:
        get_settings.cache_clear()

    [revision] = empty_versions.glob("*_create_items.py")
    text = revision.read_text()
    assert "op.create_table(" in text
    assert "'items'" in text or '"items"' in text


def test_upgrade_reports_an_unreachable_database_in_one_line() -> None:
    port = free_port()

    with pytest.raises(CommandError) as caught:
        upgrade(f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres")

    assert str(caught.value) == (
        f"Cannot reach the database postgres on 127.0.0.1:{port}: Connection refused"
    )
