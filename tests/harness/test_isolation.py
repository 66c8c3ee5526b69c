"""The test session ignores the developer's `.env` and database and AWS variables.

The proof runs part of this suite in a child pytest, from a folder holding a hostile `.env`
(`.env.example` copied, as the README suggests, plus more) and with hostile variables set,
and checks that it passes and that the child saw none of it. A control shows the same `.env`
and variables do reach the settings outside the test session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3

from infra import PROJECT_ROOT
from shared._settings import ENV_FILE_VARIABLE, Settings, get_settings
from tests.conftest import environment_outside_the_session

HOSTILE_ENV_FILE = """
DB_MODE=session
DB_STATEMENT_TIMEOUT_MS=1
DB_INSTANCES=7
DATABASE_SECRET_ARN=arn:aws:secretsmanager:eu-central-1:123456789012:secret:hostile
"""
HOSTILE_VARIABLES = {
    "DATABASE_URL": "postgresql://hostile:hunter2@db.hostile.example:6543/prod",
    "DIRECT_DATABASE_URL": "postgresql://hostile:hunter2@db.hostile.example:5432/prod",
    "DB_CONNECT_TIMEOUT": "29",  # the one value without the word: checked by name
    "DB_APPLICATION_NAME": "hostile",
    "AWS_PROFILE": "hostile",
    "AWS_ACCESS_KEY_ID": "AKIAHOSTILEHOSTILE00",
    "AWS_SECRET_ACCESS_KEY": "hostile",
    "AWS_DEFAULT_REGION": "ap-south-1",
    "SUPABASE_URL": "https://hostile.supabase.co",
    "SUPABASE_JWT_SECRET_ARN": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:jwt",
    "AUTH_JWKS_TIMEOUT_S": "9",
}
# The tests that read settings, secrets and tokens, which a `.env` copied from `.env.example`
# would change, and the probe below.
CHILD_TESTS = [
    "tests/unit/test_settings.py",
    "tests/unit/test_secrets.py",
    "tests/unit/test_engine.py",
    "tests/unit/test_tokens.py",
    f"{Path(__file__).relative_to(PROJECT_ROOT)}::test_the_session_sees_no_user_settings",
]


def test_the_session_sees_no_user_settings() -> None:
    """Passes in every session; the test below runs it with hostile values around."""
    get_settings.cache_clear()
    settings = get_settings()
    defaults = Settings.model_fields

    assert os.environ[ENV_FILE_VARIABLE] == ""
    assert settings == Settings()  # the environment only: no .env was read
    assert [name for name, value in os.environ.items() if "hostile" in value.lower()] == []
    for name in ("db_mode", "db_connect_timeout", "db_statement_timeout_ms", "db_instances"):
        assert getattr(settings, name) == defaults[name].default, name
    assert settings.database_secret_arn is None
    assert settings.supabase_jwt_secret_arn is None
    # None, or the session's own JWKS once a test has asked for `tokens`.
    assert (settings.supabase_url or "http://127.0.0.1").startswith("http://127.0.0.1")
    assert boto3.Session().get_credentials() is None


def hostile_folder(tmp_path: Path) -> Path:
    (tmp_path / ".env").write_text((PROJECT_ROOT / ".env.example").read_text() + HOSTILE_ENV_FILE)
    return tmp_path


def hostile_environment() -> dict[str, str]:
    """This process's environment, without the session's isolation, plus hostile values."""
    return environment_outside_the_session() | HOSTILE_VARIABLES | {"PYTHONPATH": str(PROJECT_ROOT)}


def test_control_the_hostile_values_reach_settings_outside_the_tests(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from shared._settings import get_settings; s = get_settings(); "
            "print(s.db_mode, s.db_instances, s.db_connect_timeout, s.database_secret_arn)",
        ],
        cwd=hostile_folder(tmp_path),
        env=hostile_environment(),
        capture_output=True,
        text=True,
        check=True,
    )

    mode, instances, timeout, secret_arn = done.stdout.split()
    assert (mode, instances, timeout) == ("session", "7", "29")  # from .env, .env, environment
    assert secret_arn.endswith(":secret:hostile")


def test_a_hostile_env_file_and_environment_change_nothing_in_the_session(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--rootdir",
            str(PROJECT_ROOT),
            "-c",
            str(PROJECT_ROOT / "pyproject.toml"),
            "-p",
            "no:cacheprovider",
            "-rA",
            *(str(PROJECT_ROOT / test) for test in CHILD_TESTS),
        ],
        cwd=hostile_folder(tmp_path),
        env=hostile_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = [line for line in done.stdout.splitlines() if line.startswith("PASSED ")]
    assert any(line.endswith("::test_the_session_sees_no_user_settings") for line in passed)
    assert len(passed) > 30
