"""Exchanges with the pooler per request, counted on the wire by tests/fixtures/proxy.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.contenders import ROUTES, Contender
from infra.local_stack import LocalStack
from tests.fixtures.proxy import ExchangeCounter

__all__ = ["RequestExchanges", "measure_exchanges"]

type ContenderFactory = Callable[[str], Contender]
"""Builds a contender for a database URL (the proxy's)."""


@dataclass(frozen=True)
class RequestExchanges:
    """What one request cost on the wire: connections, login exchanges, statement exchanges."""

    connections: int
    login: int
    statements: int


def measure_exchanges(
    stack: LocalStack, factories: list[ContenderFactory]
) -> dict[str, dict[str, RequestExchanges]]:
    """One warm request per route and contender through the counting proxy."""
    results: dict[str, dict[str, RequestExchanges]] = {}
    with ExchangeCounter.in_front_of(stack) as proxy:
        for factory in factories:
            contender = factory(proxy.url(stack.pooler_url()))
            for route in ROUTES:  # warm: an engine's first connection also initialises it
                contender.prepare(route)()
            results[contender.name] = {}
            for route in ROUTES:
                request = contender.prepare(route)
                proxy.settled()
                proxy.reset()
                request()
                connections = proxy.settled()
                results[contender.name][route] = RequestExchanges(
                    connections=len(connections),
                    login=sum(c.login for c in connections),
                    statements=sum(c.statements for c in connections),
                )
    return results
