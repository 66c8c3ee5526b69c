"""items owned by users, under row-level security

Each item belongs to the user who created it (`owner_id`, by default `auth.uid()`, the `sub`
of the claims the transaction acts with), SKUs are unique per owner, and row-level security,
enabled and forced, lets the role `authenticated` create, read, change and delete only its own
rows. Forced, so that the table's owner (the login role that ran this migration) is held to the
policies too unless it is a superuser or has BYPASSRLS; `service_role` has BYPASSRLS. `anon`
gets no privileges at all, even where Supabase's default privileges granted them.

Rows that existed before get the nil UUID as owner: no user has it, so they stay stored but
invisible to every user until the login role or service_role gives them an owner.

The policies call `(select auth.uid())` rather than `auth.uid()`, so Postgres evaluates it once
per statement instead of once per row (Supabase's RLS performance advice), and the unique index
on (owner_id, sku) serves their `owner_id = ...` filter.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "platform_0001"

NO_OWNER = "00000000-0000-0000-0000-000000000000"
OWN_ROWS = "owner_id = (select auth.uid())"
POLICIES = {
    "items_select_own": f"FOR SELECT TO authenticated USING ({OWN_ROWS})",
    "items_insert_own": f"FOR INSERT TO authenticated WITH CHECK ({OWN_ROWS})",
    "items_update_own": f"FOR UPDATE TO authenticated USING ({OWN_ROWS}) WITH CHECK ({OWN_ROWS})",
    "items_delete_own": f"FOR DELETE TO authenticated USING ({OWN_ROWS})",
}


def upgrade() -> None:
    op.add_column(
        "items",
        sa.Column("owner_id", sa.Uuid(), server_default=sa.text(f"'{NO_OWNER}'"), nullable=False),
    )
    op.alter_column("items", "owner_id", server_default=sa.text("auth.uid()"))
    op.drop_constraint("uq_items_sku", "items", type_="unique")
    op.create_unique_constraint(op.f("uq_items_owner_id_sku"), "items", ["owner_id", "sku"])
    op.execute("ALTER TABLE items ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE items FORCE ROW LEVEL SECURITY")
    for name, rule in POLICIES.items():
        op.execute(f"CREATE POLICY {name} ON items {rule}")
    op.execute("REVOKE ALL ON items FROM anon")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON items TO authenticated, service_role")


def downgrade() -> None:
    op.execute("REVOKE ALL ON items FROM authenticated, service_role")
    for name in POLICIES:
        op.execute(f"DROP POLICY {name} ON items")
    op.execute("ALTER TABLE items NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE items DISABLE ROW LEVEL SECURITY")
    # Fails while two owners share a SKU: decide which item keeps it before downgrading.
    op.drop_constraint(op.f("uq_items_owner_id_sku"), "items", type_="unique")
    op.create_unique_constraint(op.f("uq_items_sku"), "items", ["sku"])
    op.drop_column("items", "owner_id")
