"""The items resource: create, list (keyset pages), read, update, delete.

Routes are `async def` over asyncio sessions: FastAPI runs them on the event loop, with no
threadpool hop (a sync route would cost a new worker thread per Lambda invocation), and the
database calls never block the loop, so the same app is right under any ASGI server. Writes
commit in the session dependency, never here.

Items belong to users, so every route needs a caller who names one (`UserSessionDep`): a user's
token, or a service_role token with a `sub`, which sees every user's items and creates its own.
An anon token, or a service_role token without `sub` (an item needs an owner), is a 403.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from functions.items.errors import ItemLimitReachedError, ItemNotFoundError
from functions.items.models import ITEMS_PER_OWNER_CAP, Item
from functions.items.schemas import ItemCreate, ItemPage, ItemRead, ItemUpdate
from shared.fastapi import UserDep, UserReadSessionDep, UserSessionDep, error_responses

router = APIRouter(prefix="/items", tags=["items"])

ItemId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_PAGE_SIZE = 100


def owned_page(owner_id: str | None, after: int, limit: int) -> Select[Item]:
    """Items with id greater than `after`, in id order, at most `limit`: `owner_id`'s only.

    Row-level security still decides what the caller sees; the owner filter only tells the
    planner whose rows, as a value it can look up in the table's statistics, so it reads them
    from the (owner_id, id) index and stops after `limit`, instead of walking every owner's
    rows in id order for the policy to discard. None (a service_role caller, whom the policies
    do not restrict) lists every owner's items.
    """
    page = select(Item).where(Item.id > after).order_by(Item.id).limit(limit)
    return page if owner_id is None else page.where(Item.owner_id == owner_id)


def _over_the_cap(error: IntegrityError) -> bool:
    """Whether the database refused the row because its owner already has the most allowed."""
    driver = error.orig
    return (
        isinstance(driver, psycopg.errors.CheckViolation)
        and driver.diag.constraint_name == ITEMS_PER_OWNER_CAP
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 409, 422, 503, 500),
)
async def create_item(body: ItemCreate, session: UserSessionDep) -> ItemRead:
    """Store a new item; a duplicate SKU, or one item more than a user may keep, is a 409."""
    item = Item(**body.model_dump())
    session.add(item)
    try:
        await session.flush()  # INSERT ... RETURNING now, so a conflict surfaces in the request
    except IntegrityError as error:
        if _over_the_cap(error):
            raise ItemLimitReachedError from None
        raise
    return ItemRead.model_validate(item)


@router.get("", responses=error_responses(401, 403, 422, 503, 500))
async def list_items(
    session: UserReadSessionDep,
    caller: UserDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> ItemPage:
    """A page of the caller's items with id greater than `after`, in one SELECT."""
    owner = None if caller.role == "service_role" else caller.user_id
    rows = (await session.scalars(owned_page(owner, after, limit + 1))).all()
    page = [ItemRead.model_validate(row) for row in rows[:limit]]
    return ItemPage(items=page, next_after=page[-1].id if len(rows) > limit else None)


@router.get("/{item_id}", responses=error_responses(401, 403, 404, 422, 503, 500))
async def get_item(item_id: ItemId, session: UserReadSessionDep) -> ItemRead:
    """One item by id."""
    item = await session.get(Item, item_id)
    if item is None:
        raise ItemNotFoundError(item_id)
    return ItemRead.model_validate(item)


@router.patch("/{item_id}", responses=error_responses(400, 401, 403, 404, 409, 422, 503, 500))
async def update_item(item_id: ItemId, body: ItemUpdate, session: UserSessionDep) -> ItemRead:
    """Change some fields, in one UPDATE ... RETURNING."""
    changes = body.model_dump(exclude_unset=True)
    item = (
        await session.scalars(
            update(Item)
            .where(Item.id == item_id)
            .values(**changes, updated_at=func.now())
            .returning(Item)
        )
    ).one_or_none()
    if item is None:
        raise ItemNotFoundError(item_id)
    return ItemRead.model_validate(item)


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, 503, 500),
)
async def delete_item(item_id: ItemId, session: UserSessionDep) -> Response:
    """Delete an item, in one DELETE ... RETURNING."""
    deleted = (
        await session.scalars(delete(Item).where(Item.id == item_id).returning(Item.id))
    ).first()
    if deleted is None:
        raise ItemNotFoundError(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
