"""The models' base: constraints named by convention, so migrations can refer to them."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, create_engine
from sqlalchemy.schema import CreateTable

from shared._models import Base


def test_constraints_get_the_names_migrations_use() -> None:
    # A MetaData of its own with Base's convention: no table added to the models' metadata.
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    Table("owners", metadata, Column("id", Integer, primary_key=True))
    things = Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("sku", String, unique=True),
        Column("owner_id", ForeignKey("owners.id")),
    )

    ddl = str(CreateTable(things).compile(dialect=create_engine("postgresql+psycopg://").dialect))

    assert "CONSTRAINT pk_things PRIMARY KEY" in ddl
    assert "CONSTRAINT uq_things_sku UNIQUE" in ddl
    assert "CONSTRAINT fk_things_owner_id_owners FOREIGN KEY" in ddl
