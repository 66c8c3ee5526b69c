"""A deadline per invocation, so every request answers before Lambda's own timeout.

`connect_timeout` bounds only the connect, and `statement_timeout` only what the server is
doing: a pooler that stalls mid-request (frozen, restarting, or holding the client while it
retries a login) would keep the request waiting until Lambda kills it, and the client would see a
timeout instead of a 503. So the boundary enters `invocation_deadline()` with the time Lambda
leaves (minus a margin for answering), the engine bounds its connect timeout and each
transaction's statement timeout by what remains, and `watch()` shuts down the connection's
socket when the deadline passes. The driver then fails at once with a connection error,
SQLAlchemy discards the connection, and the request answers 503: nothing stays blocked.

One watchdog thread per process does the shutting down, for every thread and event loop; it
starts with the first watched connection, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shared._errors import ServiceUnavailableError
from shared._settings import get_settings

DEADLINE_MARGIN_S = 0.5
"""Kept back from Lambda's remaining time to build and return the answer."""

_deadline: ContextVar[float | None] = ContextVar("invocation_deadline", default=None)


@runtime_checkable
class _HasRemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class DeadlineExceededError(ServiceUnavailableError):
    """The invocation's time ran out before the database answered."""

    cause = "deadline"

    def __init__(self) -> None:
        super().__init__("The database did not answer in time, retry shortly")


@contextmanager
def invocation_deadline(seconds: float) -> Iterator[None]:
    """Bound every database call made inside the block to `seconds` from now."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_for(context: object) -> AbstractContextManager[None]:
    """The deadline of a Lambda invocation: its remaining time less the margin.

    Without a Lambda context (a local server, a script) `REQUEST_TIMEOUT_S` applies.
    """
    if isinstance(context, _HasRemainingTime):
        seconds = context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_S
    else:
        seconds = get_settings().request_timeout_s
    return invocation_deadline(seconds)


def remaining_seconds() -> float | None:
    """Seconds left before the current invocation's deadline; None outside an invocation."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@dataclass(order=True)
class Watch:
    """One connection watched until its deadline; `cancel()` when the connection is done."""

    deadline: float
    sequence: int
    sock: socket.socket | None = field(compare=False)

    def cancel(self) -> None:
        """Stop watching: the connection closed normally (or is about to)."""
        _watchdog.cancel(self)


class _Watchdog:
    """Shuts down the sockets of connections whose invocation deadline has passed."""

    def __init__(self) -> None:
        self._heap: list[Watch] = []
        self._wakeup = threading.Condition()
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, fileno: int, deadline: float) -> Watch:
        # A duplicate of the descriptor: when the driver closes its own, ours still names the
        # same socket, so a late shutdown can never hit an unrelated, reused descriptor.
        watch = Watch(deadline, next(self._sequence), socket.socket(fileno=os.dup(fileno)))
        with self._wakeup:
            heapq.heappush(self._heap, watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="invocation-deadline", daemon=True
                )
                self._thread.start()
            if self._heap[0] is watch:
                # Earlier than anything the watchdog waits for. Otherwise it is left asleep:
                # waking it on every request would cost each one a thread switch.
                self._wakeup.notify()
        return watch

    def cancel(self, watch: Watch) -> None:
        with self._wakeup:
            sock, watch.sock = watch.sock, None
        if sock is not None:
            sock.close()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while self._heap and self._heap[0].sock is None:
                    heapq.heappop(self._heap)  # cancelled
                timeout = self._heap[0].deadline - time.monotonic() if self._heap else None
                if timeout is None or timeout > 0:
                    self._wakeup.wait(timeout)
                    continue
                expired = heapq.heappop(self._heap)
                sock, expired.sock = expired.sock, None
            if sock is not None:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    """Wake the blocked driver with an end of stream, then drop our descriptor."""
    with contextlib.suppress(OSError), sock:  # OSError: the peer closed it already
        sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def watch(fileno: int) -> Watch | None:
    """Watch a connection's socket until the current deadline; None outside an invocation."""
    deadline = _deadline.get()
    return None if deadline is None else _watchdog.add(fileno, deadline)
