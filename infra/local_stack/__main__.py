"""`python -m infra.local_stack {start|stop|status|url}`: URLs to stdout, the rest to stderr."""

from __future__ import annotations

import argparse
import logging
import sys

from infra.local_stack import StackError, config_from_env, is_running, located, start, stop


def main(argv: list[str] | None = None) -> int:
    """Run one command on the dev stack that the LOCAL_* variables describe; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_stack",
        description="Local Postgres behind PgBouncer in transaction mode, like Supabase's pooler.",
        epilog="Settings: LOCAL_STACK_STATE_DIR (.local/dev), LOCAL_POSTGRES_PORT (54422), "
        "LOCAL_POOLER_PORT (6543), LOCAL_DB_PASSWORD.",
    )
    parser.add_argument(
        "command",
        choices=["start", "stop", "status", "url"],
        help="start: print the URLs; url: print one; status: exit 0 if both servers are up",
    )
    parser.add_argument("--direct", action="store_true", help="url: the direct one, to migrate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="local_stack: %(message)s", stream=sys.stderr)
    try:
        config = config_from_env()
        if args.command == "start":
            stack = start(config)
            sys.stdout.write(
                f"DATABASE_URL={stack.pooler_url()}\n"
                f"DIRECT_DATABASE_URL={stack.direct_url()}\n"
                f"PGBOUNCER_ADMIN_URL={stack.admin_url()}\n"
            )
        elif args.command == "stop":
            stop(config)
        elif args.command == "status":
            running = is_running(config)
            sys.stdout.write("running\n" if running else "not running\n")
            return 0 if running else 1
        else:
            stack = located(config)
            sys.stdout.write((stack.direct_url() if args.direct else stack.pooler_url()) + "\n")
    except (StackError, ValueError) as error:
        sys.stderr.write(f"local_stack: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
