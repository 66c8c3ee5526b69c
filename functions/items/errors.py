"""The items function's own errors; the shared mapping turns them into responses."""

from __future__ import annotations

from shared.fastapi import ConflictError, NotFoundError


class ItemNotFoundError(NotFoundError):
    """No item has the requested id (or the caller may not see it)."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"Item {item_id} not found")


class ItemLimitReachedError(ConflictError):
    """The caller already keeps as many items as one user may (the database's per-owner cap)."""

    code = "item_limit_reached"

    def __init__(self) -> None:
        super().__init__("You already keep as many items as one user may: delete some first")
