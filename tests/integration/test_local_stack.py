"""The local stack refuses ports it cannot have, against the running test stack, and each
message names what to change; nothing is started or stopped."""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
from collections.abc import Iterator

import pytest

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack, StackConfig, StackError, is_running, start
from infra.local_stack.system import service_user, state_dir


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unused_state_dir(free_port: int) -> Iterator[StackConfig]:
    """A config of its own, removed afterwards wherever the stack put it (/tmp under root)."""
    config = StackConfig(state_dir=PROJECT_ROOT / ".local" / f"unused-{free_port}")
    yield config
    for directory in {config.state_dir, state_dir(config.state_dir, service_user(), create=False)}:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_port_taken_by_another_program_names_the_variable_to_change(
    stack: LocalStack, unused_state_dir: StackConfig, free_port: int
) -> None:
    taken = stack.config.pooler_port  # another stack's PgBouncer, here
    config = dataclasses.replace(unused_state_dir, postgres_port=taken, pooler_port=free_port)

    message = f"port {taken} is taken by another program; choose one: LOCAL_POSTGRES_PORT=<port>"
    with pytest.raises(StackError, match=f"^{re.escape(message)}$"):
        start(config)

    assert not is_running(config)


def test_a_running_stack_asked_for_another_port_says_to_stop_it_first(
    stack: LocalStack, free_port: int
) -> None:
    elsewhere = dataclasses.replace(stack.config, pooler_port=free_port)

    with pytest.raises(StackError, match=f"PgBouncer .* another port than {free_port}; stop it"):
        start(elsewhere)

    assert is_running(stack.config)  # and still serving
