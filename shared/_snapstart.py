"""SnapStart runtime hooks: warm what holds no connection before the snapshot, and forget after
a restore what may have changed since or must differ between copies (settings, engines built
from a secret that may have rotated, `random`'s state). A socket in the snapshot would be dead in
every copy, so nothing connects, and a connection init opened and an engine keeps
(`DB_KEEP_CONNECTION`) is closed. Registered by `lambda_boundary` through Lambda's
`snapshot_restore_py`; where that module does not exist (tests, local runs) nothing is.
https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-python.html
"""

from __future__ import annotations

import importlib
import logging
import random
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

WARM_IMPORTS = ("psycopg", "sqlalchemy.dialects.postgresql.psycopg")
"""Imported by the first connection otherwise."""

_registered = False


def warm_before_snapshot() -> None:
    """Import and prepare what the first request needs, and leave no connection open."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from shared._boundary import event_validator
    from shared._engine import forget_engines
    from shared._secrets import extension_configured, secrets_manager_client
    from shared._settings import get_settings

    for module in WARM_IMPORTS:
        importlib.import_module(module)
    for payload_version in ("2.0", "1.0"):
        event_validator(payload_version)  # built on first use otherwise
    if get_settings().database_secret_arn is not None and not extension_configured():
        secrets_manager_client()  # what the first read would otherwise create
    # Creating an engine loads and sets up the dialect; it connects only when used.
    create_engine("postgresql+psycopg://", poolclass=NullPool).dispose()
    if "sqlalchemy.orm" in sys.modules:
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
    forget_engines()  # closes a connection kept since init; the restored copy opens its own
    logger.info("warmed before the snapshot")


def refresh_after_restore() -> None:
    """Forget the settings, the engines and the secret's URL, and reseed `random` from the OS."""
    from shared._engine import forget_engines
    from shared._settings import get_settings

    get_settings.cache_clear()
    forget_engines()
    random.seed()
    logger.info("refreshed after the restore")


def register_hooks() -> bool:
    """Register both hooks once, where the runtime provides SnapStart; True if registered."""
    global _registered
    if _registered:
        return True
    try:
        hooks = importlib.import_module("snapshot_restore_py")
    except ImportError:
        return False
    register_before_snapshot: Callable[[Callable[[], None]], object] = (
        hooks.register_before_snapshot
    )
    register_after_restore: Callable[[Callable[[], None]], object] = hooks.register_after_restore
    register_before_snapshot(warm_before_snapshot)
    register_after_restore(refresh_after_restore)
    _registered = True
    return True
