"""The declarative base every function's models share (SQLAlchemy 2.0 style).

Models live beside the function that owns them (`functions/<name>/models.py`); Alembic's env.py
imports each of those, so autogenerate and `alembic check` see every table.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints, so migrations can drop and alter them by a predictable name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base sharing one MetaData with the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
