"""How a kept connection is found stale without a round trip: its socket, read without waiting."""

from __future__ import annotations

import socket

from shared._kept_connection import _readable


def test_an_idle_open_socket_is_not_readable() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not _readable(ours.fileno())


def test_a_socket_the_peer_wrote_to_is_readable() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"E")  # an ErrorResponse, as a pooler sends before closing
        assert _readable(ours.fileno())


def test_a_socket_the_peer_closed_is_readable() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.close()
        assert _readable(ours.fileno())
