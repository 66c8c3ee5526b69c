"""SnapStart hooks: registered only where the runtime provides them, and doing what they say.

`snapshot_restore_py` exists only in Lambda's Python runtimes, so a stand-in module that
records what is registered takes its place on `sys.modules`.
"""

from __future__ import annotations

import random
import socket
import sys
import types
from collections.abc import Callable, Iterator

import pytest

from shared import _snapstart as snapstart
from shared._boundary import json_response, lambda_boundary
from shared._engine import get_engine
from shared._secrets import EXTENSION_PORT_VARIABLE, SESSION_TOKEN_VARIABLE, secrets_manager_client
from shared._settings import get_settings
from tests.fixtures.stack import reset_caches

type Hook = Callable[[], None]


@pytest.fixture
def runtime_hooks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Hook]]:
    """A stand-in `snapshot_restore_py` that records the registered hooks."""
    registered: dict[str, list[Hook]] = {"before_snapshot": [], "after_restore": []}
    module = types.ModuleType("snapshot_restore_py")
    module.register_before_snapshot = registered["before_snapshot"].append  # type: ignore[attr-defined]
    module.register_after_restore = registered["after_restore"].append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", module)
    monkeypatch.setattr(snapstart, "_registered", False)
    return registered


@pytest.fixture
def unreachable_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """DATABASE_URL pointing at a loopback listener that records whoever connects."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setenv("DATABASE_URL", f"postgresql://app:secret@127.0.0.1:{port}/app")
        monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
        reset_caches()
        yield listener
    reset_caches()


def test_hooks_are_registered_once_where_the_runtime_has_them(
    runtime_hooks: dict[str, list[Hook]],
) -> None:
    assert snapstart.register_hooks()
    assert snapstart.register_hooks()

    assert runtime_hooks == {
        "before_snapshot": [snapstart.warm_before_snapshot],
        "after_restore": [snapstart.refresh_after_restore],
    }


def test_wrapping_a_handler_registers_the_hooks(runtime_hooks: dict[str, list[Hook]]) -> None:
    lambda_boundary(lambda _event, _context: json_response(200, {}))

    assert runtime_hooks == {
        "before_snapshot": [snapstart.warm_before_snapshot],
        "after_restore": [snapstart.refresh_after_restore],
    }


def test_nothing_is_registered_without_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import raises ImportError
    monkeypatch.setattr(snapstart, "_registered", False)

    assert not snapstart.register_hooks()


def test_warming_loads_the_driver_and_connects_to_nothing(
    unreachable_database: socket.socket,
) -> None:
    unreachable_database.settimeout(0.2)

    snapstart.warm_before_snapshot()

    assert "sqlalchemy.dialects.postgresql.psycopg" in sys.modules
    assert get_engine.cache_info().currsize == 0
    with pytest.raises(TimeoutError):
        unreachable_database.accept()
    # The control: the listener does see a client that connects.
    with socket.create_connection(unreachable_database.getsockname()):
        connection, _ = unreachable_database.accept()
        connection.close()


def test_restore_forgets_the_engine_and_settings_and_reseeds_random(
    unreachable_database: socket.socket,
) -> None:
    engine, settings = get_engine(), get_settings()
    random.seed(1)
    snapshot_draw = random.random()
    random.seed(1)  # as if restored from the snapshot taken above

    snapstart.refresh_after_restore()

    assert random.random() != snapshot_draw
    assert get_engine() is not engine
    assert get_settings() is not settings


@pytest.mark.parametrize("through_extension", [False, True])
def test_warming_creates_the_secrets_client_only_where_boto3_will_read(
    aws: None, monkeypatch: pytest.MonkeyPatch, through_extension: bool
) -> None:
    """Under SnapStart boto3 reads the secret (no session token for the extension), so its
    client is made before the snapshot; where the extension reads, boto3 stays unloaded."""
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:eu-central-1:1:secret:x")
    if through_extension:
        monkeypatch.setenv(EXTENSION_PORT_VARIABLE, "2773")
        monkeypatch.setenv(SESSION_TOKEN_VARIABLE, "token")
    secrets_manager_client.cache_clear()
    reset_caches()
    try:
        snapstart.warm_before_snapshot()
        clients = secrets_manager_client.cache_info().currsize
    finally:
        monkeypatch.undo()
        secrets_manager_client.cache_clear()
        reset_caches()

    assert clients == (0 if through_extension else 1)
