"""Read sessions refuse writes: in the session itself, and in Postgres as a second line.

A read session runs in autocommit, so a write slipped through it would be committed on the
spot, even if the request failed afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import String, func, select, update
from sqlalchemy.exc import InternalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from infra.local_stack import LocalStack
from shared._identity import Identity
from shared._sessions import ReadOnlySessionError, async_read_session, read_session, session_scope

# Each proof holds with a kept connection too.
pytestmark = pytest.mark.usefixtures("probe_table", "as_user", "pool_mode")


class _ProbeBase(DeclarativeBase):
    """Apart from the platform's `Base`, so migrations never see the probe table."""


class Probe(_ProbeBase):
    """A row of this module's own table: the sessions are tested without any function."""

    __tablename__ = "session_probes"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(80))


@pytest.fixture(scope="module")
def probe_table(database: LocalStack) -> Iterator[None]:
    """The probe table, writable by the API roles the sessions act as, dropped afterwards."""
    with psycopg.connect(database.direct_url(), autocommit=True) as admin:
        admin.execute(
            "CREATE TABLE session_probes (id serial PRIMARY KEY, sku varchar(40) UNIQUE NOT NULL,"
            " name varchar(80) NOT NULL)"
        )
        admin.execute("GRANT SELECT, INSERT, UPDATE ON session_probes TO anon, authenticated")
        admin.execute("GRANT USAGE ON SEQUENCE session_probes_id_seq TO anon, authenticated")
    yield
    with psycopg.connect(database.direct_url(), autocommit=True) as admin:
        admin.execute("DROP TABLE session_probes")


def count(sku: str) -> int:
    with read_session() as session:
        return session.scalar(select(func.count()).where(Probe.sku == sku)) or 0


def test_flushing_a_new_object_through_a_read_session_raises_and_stores_nothing() -> None:
    sku = f"RO-{uuid.uuid4().hex[:12]}"

    with read_session() as session:
        session.add(Probe(sku=sku, name="never stored"))
        with pytest.raises(ReadOnlySessionError):
            session.flush()

    assert count(sku) == 0


def test_postgres_refuses_a_write_statement_in_a_read_session() -> None:
    sku = f"RO-{uuid.uuid4().hex[:12]}"
    with session_scope() as session:
        session.add(Probe(sku=sku, name="stored"))

    with pytest.raises(InternalError) as refused, read_session() as session:
        session.execute(update(Probe).where(Probe.sku == sku).values(name="changed"))

    assert isinstance(refused.value.orig, psycopg.errors.ReadOnlySqlTransaction)
    with read_session() as session:
        assert session.scalar(select(Probe.name).where(Probe.sku == sku)) == "stored"


def test_control_the_same_write_in_a_read_write_session_is_stored() -> None:
    sku = f"RW-{uuid.uuid4().hex[:12]}"

    with session_scope() as session:
        session.add(Probe(sku=sku, name="stored"))

    assert count(sku) == 1


def test_the_async_read_session_of_fastapi_routes_refuses_writes_too(as_user: Identity) -> None:
    sku = f"RO-{uuid.uuid4().hex[:12]}"

    async def write_through_a_read_session() -> None:
        async with async_read_session(as_user) as session:
            session.add(Probe(sku=sku, name="never stored"))
            await session.flush()

    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset this thread's loop
    try:
        with pytest.raises(ReadOnlySessionError):
            loop.run_until_complete(write_through_a_read_session())
    finally:
        loop.close()

    assert count(sku) == 0
