"""Request and response bodies of the items API; strict, so wrong types are a 422.

The JSON schema of each request body says exactly what the API accepts: every limit is
checked on the string as sent (the same string the schema describes) and names are trimmed
only afterwards. Text that Postgres cannot store is refused here with a 422 instead of failing
in the database: NUL (U+0000) by the patterns, lone surrogates by pydantic itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.config import JsonDict

# Exactly the characters `str.strip()` removes (those for which `str.isspace()` is true),
# spelled as \u escapes that Python, Rust (pydantic) and ECMA (JSON Schema) regexes all read.
WHITESPACE = (
    r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
NO_NUL = r"[^\u0000]*"
VISIBLE = rf"[^\u0000{WHITESPACE}]"

Sku = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=rf"^{NO_NUL}{VISIBLE}{NO_NUL}$"),
    AfterValidator(str.strip),
]
"""Some visible text, at most 200 characters as sent, stored without surrounding whitespace."""


def _integral_number(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, so the API does too; 3.5 and "3" stay invalid."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


PostgresInteger = Annotated[int, Field(ge=0, le=2_147_483_647)]
Quantity = Annotated[PostgresInteger, BeforeValidator(_integral_number)]


class ItemCreate(BaseModel):
    """Body of POST /items."""

    model_config = ConfigDict(strict=True, extra="forbid")

    sku: Sku
    name: Name
    quantity: Quantity = 0


def _at_least_one_field(schema: JsonDict) -> None:
    schema["minProperties"] = 1


class ItemUpdate(BaseModel):
    """Body of PATCH /items/{id}: the fields to change, at least one, none null.

    A field left out is `MISSING`, which `model_dump()` leaves out too; `null` is not a value
    of any field, so the schema shows none and the API refuses it.
    """

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_at_least_one_field)

    sku: Sku | MISSING = MISSING
    name: Name | MISSING = MISSING
    quantity: Quantity | MISSING = MISSING

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one of sku, name, quantity")
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
