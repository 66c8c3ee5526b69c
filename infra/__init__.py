"""What provisions things: the local Postgres + pooler stack, migrations, deployment pieces."""

from pathlib import Path

# The repository's root: every path the tooling and the tests name starts here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
