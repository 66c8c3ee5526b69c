"""A SnapStart life cycle simulated in-process against the real pooler.

Lambda runs init, then the before-snapshot hooks (in reverse order of registration), takes
the snapshot, and in each restored copy runs the after-restore hooks (in order) before the
first request. The counting proxy shows that nothing connected before the snapshot and that
the restored copy serves requests with one connection each.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable

import pytest

import functions.health.handler
import functions.items.handler
from infra.local_stack import LocalStack
from shared import _snapstart as snapstart
from shared._boundary import event_validator
from tests.fixtures.lambda_events import LambdaTestContext, http_event
from tests.fixtures.proxy import ExchangeCounter
from tests.fixtures.stack import reset_caches

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows


@pytest.mark.usefixtures("pool_mode")
def test_the_functions_serve_after_a_simulated_snapshot_and_restore(
    database: LocalStack, exchange_counter: ExchangeCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    before: list[Callable[[], None]] = []
    after: list[Callable[[], None]] = []
    runtime = types.ModuleType("snapshot_restore_py")
    runtime.register_before_snapshot = before.append  # type: ignore[attr-defined]
    runtime.register_after_restore = after.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime)
    monkeypatch.setattr(snapstart, "_registered", False)
    monkeypatch.setenv("DATABASE_URL", exchange_counter.url(database.pooler_url()))
    reset_caches()

    # Defining the functions' handlers, as Lambda's init does, registers the hooks.
    health_handler = importlib.reload(functions.health.handler).handler
    items_handler = importlib.reload(functions.items.handler).handler
    assert (before, after) == ([snapstart.warm_before_snapshot], [snapstart.refresh_after_restore])
    event_validator.cache_clear()  # built on first use, so the snapshot must hold them
    for hook in reversed(before):
        hook()
    connected_before_snapshot = exchange_counter.settled()
    validators_in_snapshot = event_validator.cache_info().currsize
    for hook in after:
        hook()
    health = health_handler(http_event("GET /health"), LambdaTestContext())
    items = items_handler(http_event("GET /items", query="limit=1"), LambdaTestContext())
    reset_caches()

    assert connected_before_snapshot == []
    assert validators_in_snapshot == 2  # payload 2.0 and 1.0
    assert (health["statusCode"], items["statusCode"]) == (200, 200)
    assert len(exchange_counter.settled()) == 2
