"""The reference FastAPI function: written the way most tutorials write one, and correct.

Sync routes, a generator dependency that yields a session, routes that commit and `refresh`,
SQLAlchemy's defaults (`expire_on_commit=True`, TLS as the URL says, no statement timeout) and
Mangum's default lifespan. Only what correctness through a transaction pooler demands is
changed: `NullPool` and `prepare_threshold=None`. The project's function is measured against it.
Like most such code it does without `from __future__ import annotations`: FastAPI resolves the
routes' annotations where they are defined, inside `build_naive_handler`.
"""

import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Response
from mangum import Mangum
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from functions.items.models import Item
from functions.items.schemas import ItemCreate, ItemPage, ItemRead, ItemUpdate
from shared._connection_usage import USAGE_QUERY, build_report

__all__ = ["build_naive_handler"]


def build_naive_handler(database_url: str, owner_id: str) -> Mangum:
    """A FastAPI + Mangum handler serving the same routes as the project's functions.

    It connects as the login role and sets no identity; what it creates is `owner_id`'s.
    """
    engine = create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://", 1),
        poolclass=NullPool,
        connect_args={"prepare_threshold": None},
    )
    session_factory = sessionmaker(bind=engine)

    def get_db() -> Iterator[Session]:
        db = session_factory()
        try:
            yield db
        finally:
            db.close()

    db_dependency = Annotated[Session, Depends(get_db)]
    app = FastAPI()

    @app.get("/health")
    def health(db: db_dependency) -> dict[str, str]:
        db.execute(text("SELECT 1"))
        return {"status": "ok", "database": "reachable"}

    @app.get("/connections")
    def connections(db: db_dependency) -> dict[str, Any]:
        row = db.execute(USAGE_QUERY).one()
        return build_report(row.max_connections, row.by_application)

    @app.get("/items")
    def list_items(db: db_dependency, limit: int = 20, after: int = 0) -> ItemPage:
        rows = db.scalars(
            select(Item).where(Item.id > after).order_by(Item.id).limit(limit + 1)
        ).all()
        page = [ItemRead.model_validate(row) for row in rows[:limit]]
        return ItemPage(items=page, next_after=page[-1].id if len(rows) > limit else None)

    @app.get("/items/{item_id}")
    def get_item(item_id: int, db: db_dependency) -> ItemRead:
        item = db.get(Item, item_id)
        if item is None:
            raise HTTPException(status_code=404, detail="Item not found")
        return ItemRead.model_validate(item)

    @app.post("/items", status_code=201)
    def create_item(body: ItemCreate, db: db_dependency) -> ItemRead:
        item = Item(**body.model_dump(), owner_id=uuid.UUID(owner_id))
        db.add(item)
        db.commit()
        db.refresh(item)
        return ItemRead.model_validate(item)

    @app.patch("/items/{item_id}")
    def update_item(item_id: int, body: ItemUpdate, db: db_dependency) -> ItemRead:
        item = db.get(Item, item_id)
        if item is None:
            raise HTTPException(status_code=404, detail="Item not found")
        for name, value in body.model_dump(exclude_unset=True).items():
            setattr(item, name, value)
        db.commit()
        db.refresh(item)
        return ItemRead.model_validate(item)

    @app.delete("/items/{item_id}", status_code=204)
    def delete_item(item_id: int, db: db_dependency) -> Response:
        item = db.get(Item, item_id)
        if item is None:
            raise HTTPException(status_code=404, detail="Item not found")
        db.delete(item)
        db.commit()
        return Response(status_code=204)

    return Mangum(app)
