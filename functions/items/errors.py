"""The items function's own errors; the shared mapping turns them into responses."""

from __future__ import annotations

from shared.errors import NotFoundError


class ItemNotFoundError(NotFoundError):
    """No item has the requested id (or the caller may not see it)."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"Item {item_id} not found")
