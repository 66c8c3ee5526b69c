"""The deadline watchdog on socket pairs: each watched socket is shut down at its own deadline.

The watchdog sleeps until the earliest deadline it holds and is woken only by an earlier one,
so these check that a watch added behind a later one, or after cancelled ones, still fires on
time, and that a cancelled watch never does.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from shared._deadline import invocation_deadline, watch

ON_TIME_S = 0.5
"""How late a shutdown may come: the watchdog is a thread that must get the GIL."""


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    created: list[tuple[socket.socket, socket.socket]] = []
    yield created
    for pair in created:
        for end in pair:
            end.close()


def shut_down_after(pairs: list[tuple[socket.socket, socket.socket]], seconds: float) -> float:
    """Watch a new socket until `seconds` from now; how long until its peer saw it shut down."""
    ours, peer = socket.socketpair()
    pairs.append((ours, peer))
    started = time.monotonic()
    with invocation_deadline(seconds):
        watched = watch(ours.fileno())
    assert watched is not None
    peer.settimeout(seconds + ON_TIME_S + 1)
    assert peer.recv(1) == b""  # end of stream: our end was shut down
    return time.monotonic() - started


def test_an_earlier_deadline_added_behind_a_later_one_fires_on_time(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    ours, _peer = socket.socketpair()
    pairs.append((ours, _peer))
    with invocation_deadline(30):
        later = watch(ours.fileno())  # the watchdog now sleeps until this one
    assert later is not None

    waited = shut_down_after(pairs, 0.2)

    later.cancel()
    assert 0.2 <= waited < 0.2 + ON_TIME_S


def test_cancelled_watches_do_not_delay_or_fire(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    ours, peer = socket.socketpair()
    pairs.append((ours, peer))
    for _ in range(50):
        with invocation_deadline(0.1):
            cancelled = watch(ours.fileno())
        assert cancelled is not None
        cancelled.cancel()

    waited = shut_down_after(pairs, 0.3)

    assert 0.3 <= waited < 0.3 + ON_TIME_S
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing shut the cancelled socket down
        peer.recv(1)
