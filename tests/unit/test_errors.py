"""The error hierarchy a function raises; its mapping to HTTP is test_error_mapping.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Importing the hierarchy in a fresh interpreter: which database libraries came with it.
PROBE = """
import sys
import shared._errors
print(sorted({name.split(".")[0] for name in sys.modules} & {"psycopg", "sqlalchemy"}))
"""


def test_importing_the_errors_loads_no_database_library() -> None:
    """A plain function raising NotFoundError should not pay for the driver at cold start."""
    loaded = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert loaded == "[]"
