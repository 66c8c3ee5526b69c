"""Each FastAPI function serves exactly the routes serverless.yml gives it, and no other.

API Gateway routes only the `httpApi` events of serverless.yml (unknown paths never invoke a
function), and the app answers only what its router declares: a route on one side alone is a
404 in production while every handler test passes. The functions come from serverless.yml, so
a new or scaffolded function is checked without editing this file.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import replace

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from infra.serverless_config import Function, Route
from tests.fixtures.service import SERVICE, handler_module, uses_fastapi

# HTTP API answers CORS preflight itself (provider.httpApi.cors), and Starlette adds HEAD beside
# every GET: neither is a route serverless.yml needs.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
ANY_METHOD = frozenset({"ANY", "*"})
GREEDY = re.compile(r"(?P<prefix>.*/)\{\w+\+\}")


def fastapi_app(function: Function) -> FastAPI | None:
    """The function's FastAPI app: the `app` of its handler's module, if it has one."""
    app = getattr(importlib.import_module(handler_module(function)), "app", None)
    return app if isinstance(app, FastAPI) else None


def served_routes(app: FastAPI) -> dict[Route, str]:
    """Each (method, path) the app answers, with the endpoint that answers it."""
    served = {}
    for context in iter_route_contexts(app.routes):
        endpoint, path = context.endpoint, context.path_format
        if endpoint is None or path is None:
            continue
        for method in (context.methods or set()) - IMPLICIT_METHODS:
            served[Route(method, path)] = f"{endpoint.__module__}.{endpoint.__qualname__}"
    return served


def routes_to(declared: Route, served: Route) -> bool:
    """Whether API Gateway sends requests for `served` through the `declared` route."""
    if declared.method not in ANY_METHOD and declared.method != served.method:
        return False
    if declared.path in ("", "*"):  # `httpApi: '*'`: the catch-all route
        return True
    greedy = GREEDY.fullmatch(declared.path)
    return served.path.startswith(greedy["prefix"]) if greedy else declared.path == served.path


def disagreements(function: Function, app: FastAPI) -> list[str]:
    """One line per route on one side only, saying where to add it."""
    served = served_routes(app)
    events = f"functions.{function.name}.events"
    unrouted = [
        f"{route.key} is served by {endpoint} but API Gateway never routes it: add "
        f"`- httpApi: {route.key}` under {events} in serverless.yml"
        for route, endpoint in served.items()
        if not any(routes_to(declared, route) for declared in function.routes)
    ]
    unserved = [
        f"{declared.key} is routed by {events} in serverless.yml but no route of "
        f"{handler_module(function)}.app answers it: add it to the app's router, or delete "
        "the event"
        for declared in function.routes
        if not any(routes_to(declared, route) for route in served)
    ]
    return unrouted + unserved


FASTAPI_APPS = {
    function.name: (function, app)
    for function in SERVICE.functions
    if (app := fastapi_app(function)) is not None
}


@pytest.mark.parametrize("name", sorted(FASTAPI_APPS))
def test_the_router_and_serverless_yml_declare_the_same_routes(name: str) -> None:
    function, app = FASTAPI_APPS[name]

    problems = disagreements(function, app)

    assert problems == [], f"{name}: the router and serverless.yml disagree:\n" + "\n".join(
        problems
    )


def test_every_function_that_ships_fastapi_is_checked() -> None:
    """A FastAPI function whose module has no `app` would otherwise escape the check."""
    shipping_fastapi = {function.name for function in SERVICE.functions if uses_fastapi(function)}

    assert shipping_fastapi
    assert set(FASTAPI_APPS) == shipping_fastapi


# The check itself, on an app and a function of its own, so it holds without the sample.
THINGS = Function(
    name="things",
    handler="functions/things/handler.handler",
    groups=("fastapi",),
    routes=(Route("GET", "/things"), Route("GET", "/things/{thing_id}")),
)


async def list_things() -> list[str]:
    return []


async def get_thing(thing_id: int) -> str:
    return str(thing_id)


def things_app(*extra: str, docs: bool = False) -> FastAPI:
    """An app serving THINGS' routes, and `extra` routes (`METHOD /path`) besides."""
    app = FastAPI() if docs else FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/things", list_things, methods=["GET"])
    app.add_api_route("/things/{thing_id}", get_thing, methods=["GET"])
    for key in extra:
        route = Route.parse(key)
        app.add_api_route(route.path, get_thing, methods=[route.method])
    return app


def test_control_a_function_whose_sides_agree_has_no_disagreement() -> None:
    assert served_routes(things_app()) == {
        Route("GET", "/things"): f"{__name__}.list_things",
        Route("GET", "/things/{thing_id}"): f"{__name__}.get_thing",
    }
    assert disagreements(THINGS, things_app()) == []


def test_a_router_route_missing_from_serverless_yml_is_named_with_where_to_add_it() -> None:
    [problem] = disagreements(THINGS, things_app("DELETE /things/{thing_id}"))

    assert problem == (
        f"DELETE /things/{{thing_id}} is served by {__name__}.get_thing but API Gateway never "
        "routes it: add `- httpApi: DELETE /things/{thing_id}` under functions.things.events "
        "in serverless.yml"
    )


def test_a_serverless_route_no_router_route_answers_is_named() -> None:
    declared = replace(THINGS, routes=(*THINGS.routes, Route("POST", "/things")))

    [problem] = disagreements(declared, things_app())

    assert problem.startswith(
        "POST /things is routed by functions.things.events in serverless.yml but no route of "
        "functions.things.handler.app answers it"
    )


def test_a_path_parameter_spelled_differently_is_a_disagreement() -> None:
    declared = replace(THINGS, routes=(Route("GET", "/things"), Route("GET", "/things/{id}")))

    assert len(disagreements(declared, things_app())) == 2


def test_the_docs_pages_fastapi_adds_by_default_are_routes_too() -> None:
    """Unless serverless.yml routes them, production would answer them 404."""
    problems = disagreements(THINGS, things_app(docs=True))

    assert {problem.partition(" is ")[0] for problem in problems} == {
        "GET /openapi.json",
        "GET /docs",
        "GET /docs/oauth2-redirect",
        "GET /redoc",
    }


def test_an_any_method_or_greedy_route_in_serverless_yml_covers_what_it_routes() -> None:
    proxy = replace(THINGS, routes=(Route("ANY", "/{proxy+}"),))
    catch_all = replace(THINGS, routes=(Route.parse("*"),))

    assert disagreements(proxy, things_app("POST /things")) == []
    assert disagreements(catch_all, things_app("PATCH /things/{thing_id}")) == []
