"""Apply the Alembic migrations over a session-mode or direct URL (never the pooler)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def upgrade(direct_url: str) -> None:
    """Upgrade the database behind `direct_url` to the latest migration."""
    os.environ["DIRECT_DATABASE_URL"] = direct_url
    get_settings.cache_clear()  # infra/migrations/env.py reads the URL through the settings
    command.upgrade(Config(toml_file=str(PROJECT_ROOT / "pyproject.toml")), "head")
