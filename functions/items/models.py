"""The items table, owned by the items function."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.fastapi import Base

ITEMS_PER_OWNER_CAP = "items_max_per_owner"
"""The name the database's per-owner cap (migration 0003) reports when it refuses a row."""


class Item(Base):
    """A user's stock item, identified for that user by a SKU unique among their items.

    Row-level security (migration 0002) shows each user only the rows whose `owner_id` is
    theirs, and `owner_id` defaults to `auth.uid()`: routes never set it. The index on
    (owner_id, id) lets a user's list read only that user's rows, in id order (migration 0003,
    which also caps how many items one owner may keep).
    """

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        UniqueConstraint("owner_id", "sku"),
        Index("ix_items_owner_id_id", "owner_id", "id"),
    )
    # Server-generated columns come back in INSERT/UPDATE ... RETURNING, not a second SELECT.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(server_default=text("auth.uid()"))
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
