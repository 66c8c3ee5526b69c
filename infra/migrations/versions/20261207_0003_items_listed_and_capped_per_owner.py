"""items listed per owner, and capped per owner

An index on (owner_id, id): a user's list (`WHERE owner_id = ... AND id > :after ORDER BY id
LIMIT n`) reads that user's rows in order and stops, so it costs what the caller owns. Without
it Postgres walks the primary key and row-level security discards everyone else's rows one by
one, however many there are. Plain CREATE INDEX blocks writes to the table while it builds; on a
large live table build it with `postgresql_concurrently=True` inside
`op.get_context().autocommit_block()` instead.

A trigger refuses a row that would give its owner more than MAX_ITEMS_PER_OWNER items, with
SQLSTATE 23514 (check_violation) and the constraint name `items_max_per_owner`, which the items
function answers with a 409. It holds for every writer (the API, service_role, SQL), and
concurrent creates cannot race past it: the trigger takes a transaction-scoped advisory lock on
the owner before counting, so a second create waits for the first to commit, and its count, a
new snapshot under READ COMMITTED (Postgres's default, which the functions use), includes the
first's row. Transaction-scoped locks end with the transaction, so they are safe behind a
transaction-mode pooler. A row-level BEFORE trigger sees the rows its statement inserted
before, so one multi-row INSERT is capped too. To change the cap, write a migration that runs
`CREATE OR REPLACE TRIGGER` with the new number as the function's argument.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_ITEMS_PER_OWNER = 10_000
"""How many items one user may keep: enough for a real stock list, finite for a shared table."""

CAP_CONSTRAINT = "items_max_per_owner"

REFUSE_OVER_CAP = f"""
CREATE FUNCTION items_refuse_over_cap() RETURNS trigger LANGUAGE plpgsql VOLATILE
SET search_path = '' AS $function$
DECLARE
    cap constant bigint := TG_ARGV[0]::bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.owner_id = OLD.owner_id THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('items_per_owner:' || NEW.owner_id::text, 0));
    IF (SELECT count(*) FROM public.items WHERE owner_id = NEW.owner_id) >= cap THEN
        RAISE EXCEPTION 'an owner may keep at most % items', cap
            USING ERRCODE = 'check_violation', CONSTRAINT = '{CAP_CONSTRAINT}', TABLE = 'items';
    END IF;
    RETURN NEW;
END
$function$
"""


def upgrade() -> None:
    op.create_index(op.f("ix_items_owner_id_id"), "items", ["owner_id", "id"])
    op.execute(REFUSE_OVER_CAP)
    op.execute(
        f"CREATE TRIGGER {CAP_CONSTRAINT} BEFORE INSERT OR UPDATE OF owner_id ON items"
        f" FOR EACH ROW EXECUTE FUNCTION items_refuse_over_cap({MAX_ITEMS_PER_OWNER})"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {CAP_CONSTRAINT} ON items")
    op.execute("DROP FUNCTION items_refuse_over_cap()")
    op.drop_index(op.f("ix_items_owner_id_id"), table_name="items")
