"""The test servers' ports come from TEST_* variables; a taken one names the variable."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.fixtures.stack import TEST_PORTS, port_for, require_free


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("variable", sorted(TEST_PORTS))
def test_each_port_has_a_default_and_can_be_overridden(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert port_for(variable) == TEST_PORTS[variable]

    monkeypatch.setenv(variable, "40123")
    assert port_for(variable) == 40123


@pytest.mark.parametrize("variable", sorted(TEST_PORTS))
def test_a_taken_port_stops_the_session_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, taken_port: int, variable: str
) -> None:
    monkeypatch.setenv(variable, str(taken_port))

    with pytest.raises(pytest.exit.Exception) as stopped:
        require_free(variable)

    message = str(stopped.value)
    assert f"port {taken_port} ({variable}) is taken" in message
    assert f"export {variable}=" in message


@pytest.mark.parametrize("value", ["http", "0", "70000"])
def test_a_port_that_is_not_a_port_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TEST_POOLER_PORT", value)

    with pytest.raises(pytest.exit.Exception, match="TEST_POOLER_PORT must be a port number"):
        port_for("TEST_POOLER_PORT")
