"""What provisions things: the local Postgres + pooler stack, migrations, deployment pieces."""
