"""SnapStart runtime hooks: warm everything before the snapshot, refresh what must be fresh after.

With SnapStart on (`snapStart` in serverless.yml, Python 3.12+, published versions only),
Lambda runs a function's init once when a version is published, snapshots the memory, and
starts every later cold instance from a copy of that snapshot. So:

- before the snapshot, do the work every first request would otherwise do and that holds no
  connection: import psycopg's C implementation and the PostgreSQL dialect, create boto3's
  Secrets Manager client when the URL comes from a secret (SnapStart sets no
  `AWS_SESSION_TOKEN`, so the Parameters and Secrets extension cannot be asked: see
  shared/_secrets.py), configure the ORM mappers. Open no connection: a socket in
  the snapshot is dead in every restored copy.
- after a restore, forget what may have changed since the snapshot or must differ between
  copies: the settings and the engine (built from the secret, which may have been rotated),
  and `random`'s state (every copy would otherwise draw the same numbers).

The hooks are registered through `snapshot_restore_py`, which Lambda's Python runtimes
provide; where it does not exist (tests, local runs, other servers) nothing is registered.
https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-python.html
"""

from __future__ import annotations

import importlib
import logging
import random
import sys
from collections.abc import Callable

__all__ = ["refresh_after_restore", "register_hooks", "warm_before_snapshot"]

logger = logging.getLogger(__name__)

WARM_IMPORTS = ("psycopg", "sqlalchemy.dialects.postgresql.psycopg")
"""Imported by the first connection otherwise."""

_registered = False


def warm_before_snapshot() -> None:
    """Import and prepare what the first request needs, without connecting to anything."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from shared._secrets import extension_configured, secrets_manager_client
    from shared._settings import get_settings

    for module in WARM_IMPORTS:
        importlib.import_module(module)
    if get_settings().database_secret_arn is not None and not extension_configured():
        secrets_manager_client()  # what the first read would otherwise create
    # Creating an engine loads and sets up the dialect; it connects only when used.
    create_engine("postgresql+psycopg://", poolclass=NullPool).dispose()
    if "sqlalchemy.orm" in sys.modules:
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
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
