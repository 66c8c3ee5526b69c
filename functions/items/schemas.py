"""Request and response bodies of the items API; strict, so wrong types are a 422."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Sku = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Quantity = Annotated[int, Field(ge=0, le=2_147_483_647)]  # the column is a Postgres integer


class ItemCreate(BaseModel):
    """Body of POST /items."""

    model_config = ConfigDict(strict=True, extra="forbid")

    sku: Sku
    name: Name
    quantity: Quantity = 0


class ItemUpdate(BaseModel):
    """Body of PATCH /items/{id}: the fields to change, at least one, none null."""

    model_config = ConfigDict(strict=True, extra="forbid")

    sku: Sku | None = None
    name: Name | None = None
    quantity: Quantity | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one of sku, name, quantity")
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"may not be null: {', '.join(nulls)}")
        return self


class ItemRead(BaseModel):
    """An item as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    quantity: int
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of items in id order; pass `next_after` as `after` for the next page."""

    items: list[ItemRead]
    next_after: int | None
