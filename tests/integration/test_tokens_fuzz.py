"""Whatever a token holds, the functions answer 2xx, 401 or 403 with the JSON error body: never a
500, never an ERROR line.

Hypothesis makes tokens signed with the project's real key whose header and claims vary in type
and value (strings, numbers, lists, objects, null, booleans, NaN, missing), payloads that are not
objects at all, and unsigned garbage. Each goes, as a bearer token, to an items route and to the
connection monitor, invoked as Lambda invokes them (a real API Gateway event, the boundary,
Mangum), against the local stack; most cases are refused before any database work, the validly
signed ones act on the database as the identity they name.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from jwt.utils import base64url_encode
from sqlalchemy import delete, func, select

from functions.connections.handler import handler as connections_handler
from functions.items.handler import handler as items_handler
from functions.items.models import Item
from shared._engine import transaction
from shared._identity import acting_as_login_role
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.tokens import Tokens

MIN_CASES = 1000
ITEMS_STATUSES = {200, 201, 204, 401, 403, 404}
"""404: the sample item, which the token's user may not see or another case deleted."""

CONNECTIONS_STATUSES = {200, 401, 403}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A header field or claim left out of the token."""

ALG_A_LIST = "eyJhbGciOlsiRVMyNTYiXSwia2lkIjoieCJ9.e30.eA"


@dataclass(frozen=True)
class TokenCase:
    """A token to send: the project's genuine header and claims for `role`, with `header` and
    `claims` replacing (MISSING: removing) fields; or `payload` in place of the claims; or
    `raw`, an unsigned string sent as it is."""

    role: str = "authenticated"
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    payload: Any = MISSING
    raw: str | None = None

    def token(self, tokens: Tokens) -> str:
        if self.raw is not None:
            return self.raw
        header = _changed(tokens.header(), self.header)
        claims = _changed(tokens.claims(role=self.role), self.claims)
        return tokens.signed(header, claims if self.payload is MISSING else self.payload)


def _changed(fields: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = fields | changes
    return {name: value for name, value in merged.items() if value is not MISSING}


NOW = int(time.time())
ODD_TEXT = ["", "\x00", "\ud800", "9999999999", "authenticated", "service_role", "anon", "ES256"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: Python's JSON writes and reads them
    | st.text(max_size=8)
    | st.sampled_from(ODD_TEXT)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
ANY_VALUE = JSON_VALUES | st.just(MISSING)


def plausible(*values: Any) -> st.SearchStrategy[Any]:
    """Values a client or a careless issuer might send, twice as often as arbitrary JSON."""
    return st.one_of(st.sampled_from(values), st.sampled_from(values), ANY_VALUE)


TIMES = (NOW + 3600, NOW - 3600, str(NOW + 3600), float(NOW + 3600), NOW * 10**9)

HEADER_CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "alg": plausible("HS256", "none", "RS256", "ES384", "es256", ["ES256"]),
    "kid": plausible("another-kid", ""),
    "crit": plausible(["b64"], ["exp"], []),
    "b64": plausible(True, False),
    "typ": plausible("JWT", "at+jwt"),
}
CLAIM_CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "exp": plausible(*TIMES),
    "nbf": plausible(*TIMES),
    "iat": plausible(*TIMES),
    "iss": plausible("https://attacker.supabase.co/auth/v1", ""),
    "aud": plausible("another-api", ["authenticated"], ["authenticated", "x"], [], [1]),
    "sub": plausible(str(uuid.uuid4()).upper(), uuid.uuid4().hex, "alice", ""),
    "role": plausible("anon", "service_role", "authenticated", "postgres", ""),
    "user_metadata": plausible({"name": "a\x00b"}, {"name": "\ud800"}, {"a": [[[[1]]]]}),
}
GARBAGE = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.lists(st.binary(max_size=40), min_size=1, max_size=4).map(
        lambda parts: ".".join(base64url_encode(part).decode() for part in parts)
    ),
)


def _changes(
    draw: st.DrawFn, strategies: dict[str, st.SearchStrategy[Any]], counts: list[int]
) -> dict[str, Any]:
    """A few fields changed, most often one or none: a token wrong in one way reaches further
    checks (and the database) than one wrong in every way."""
    count = draw(st.sampled_from(counts))
    names = draw(
        st.lists(st.sampled_from(sorted(strategies)), min_size=count, max_size=count, unique=True)
    )
    return {name: draw(strategies[name]) for name in sorted(names)}


@st.composite
def token_cases(draw: st.DrawFn) -> TokenCase:
    kind = draw(st.sampled_from(["signed"] * 6 + ["not an object", "garbage"]))
    if kind == "garbage":
        return TokenCase(raw=draw(GARBAGE))
    return TokenCase(
        role=draw(st.sampled_from(["authenticated", "anon", "service_role"])),
        header=_changes(draw, HEADER_CHANGES, [0, 0, 0, 1, 2]),
        claims=_changes(draw, CLAIM_CHANGES, [0, 1, 1, 1, 2, 3]),
        payload=draw(JSON_VALUES) if kind == "not an object" else MISSING,
    )


def new_sku() -> str:
    return f"FUZZ-{uuid.uuid4().hex[:12]}"


ITEM_REQUESTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "POST /items": lambda _: {"body": {"sku": new_sku(), "name": "fuzz"}},
    "GET /items": lambda _: {"query": "limit=1"},
    "GET /items/{item_id}": lambda item_id: {"path": f"/items/{item_id}"},
    "PATCH /items/{item_id}": lambda item_id: {
        "path": f"/items/{item_id}",
        "body": {"quantity": 1},
    },
    "DELETE /items/{item_id}": lambda item_id: {"path": f"/items/{item_id}"},
}


class _ErrorRecords(logging.Handler):
    """Every record at ERROR or above, whichever logger wrote it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# The functions' loggers write through handlers of their own and do not propagate to the root.
_WATCHED_LOGGERS = ("", "shared", "functions", "mangum")


@pytest.fixture(scope="module")
def error_records() -> Iterator[_ErrorRecords]:
    records = _ErrorRecords()
    for name in _WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(records)
    yield records
    for name in _WATCHED_LOGGERS:
        logging.getLogger(name).removeHandler(records)


@pytest.fixture(scope="module")
def sample_item(tokens: Tokens) -> Iterator[int]:
    """An item of a user of its own, for the routes that name one; the rows the run creates are
    removed after."""
    with acting_as_login_role(), transaction() as conn:
        last_id = conn.execute(select(func.coalesce(func.max(Item.id), 0))).scalar_one()
    event = http_event(
        "POST /items", body={"sku": new_sku(), "name": "sample"}, token=tokens.token()
    )
    created = items_handler(event, LambdaTestContext())
    assert created["statusCode"] == 201, created
    yield int(body_of(created)["id"])
    with acting_as_login_role(), transaction() as conn:
        conn.execute(delete(Item).where(Item.id > last_id))


@pytest.fixture
def outcomes() -> Iterator[Counter[tuple[str, int]]]:
    """(function, status) of every answer; too few cases, or a kind of answer never seen (say,
    no token ever accepted), fails the test."""
    seen: Counter[tuple[str, int]] = Counter()
    yield seen
    assert sum(count for (function, _), count in seen.items() if function == "items") >= MIN_CASES
    kinds = {(function, 200 if status < 300 else status) for function, status in seen}
    assert {("items", 200), ("items", 401), ("items", 403)} <= kinds, seen
    assert {("connections", 200), ("connections", 401), ("connections", 403)} <= kinds, seen


def check_answer(response: dict[str, Any], allowed: set[int]) -> None:
    status = response["statusCode"]
    assert status in allowed, (status, response.get("body"))
    if status >= 400:
        body = body_of(response)
        assert isinstance(body, dict)
        assert isinstance(body.get("code"), str)
        assert isinstance(body.get("message"), str)
    if status == 401:
        headers = {name.lower(): value for name, value in response["headers"].items()}
        assert headers["www-authenticate"].startswith("Bearer")


@example(case=TokenCase(raw=ALG_A_LIST), route="GET /items")
@example(case=TokenCase(role="anon"), route="GET /items")
@example(case=TokenCase(role="service_role", claims={"sub": MISSING}), route="POST /items")
@example(case=TokenCase(claims={"exp": str(NOW + 3600)}), route="GET /items")
@example(case=TokenCase(claims={"role": ["service_role"]}), route="GET /items")
@example(case=TokenCase(role="service_role"), route="GET /items")
@example(case=TokenCase(claims={"sub": "alice"}), route="GET /items")
@example(case=TokenCase(claims={"email": "a\x00b@example.test"}), route="GET /items")
@given(case=token_cases(), route=st.sampled_from(sorted(ITEM_REQUESTS)))
@settings(
    max_examples=MIN_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_token_is_answered_2xx_401_or_403_never_500(
    case: TokenCase,
    route: str,
    tokens: Tokens,
    sample_item: int,
    error_records: _ErrorRecords,
    outcomes: Counter[tuple[str, int]],
) -> None:
    token = case.token(tokens)
    error_records.records.clear()

    items = items_handler(
        http_event(route, token=token, **ITEM_REQUESTS[route](sample_item)), LambdaTestContext()
    )
    connections = connections_handler(
        http_event("GET /connections", token=token), LambdaTestContext()
    )

    outcomes.update([("items", items["statusCode"]), ("connections", connections["statusCode"])])
    event(f"items {items['statusCode']}, connections {connections['statusCode']}")
    check_answer(items, ITEMS_STATUSES)
    check_answer(connections, CONNECTIONS_STATUSES)
    assert [
        (r.name, r.getMessage(), getattr(r, "error", None)) for r in error_records.records
    ] == []
