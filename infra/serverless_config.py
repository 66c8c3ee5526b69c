"""serverless.yml, read in one place: the functions, their handlers, dependency groups and
routes (for the build, the scaffold and the tests), and one stage's values resolved as
`serverless` resolves them (for the commands that talk to AWS beside it).

Only the variable sources serverless.yml uses are resolved (`opt:`, `env:`, `param:`, quoted
literals, fallbacks); anything else is refused in one line rather than guessed.
tests/package/test_stage_config.py compares the result with `serverless print`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra import PROJECT_ROOT

__all__ = [
    "SERVERLESS_YML",
    "ConfigError",
    "Function",
    "Route",
    "Service",
    "StageConfig",
    "load_config",
    "read_service",
    "read_stage_config",
    "reserved_concurrency",
    "resolve",
]

SERVERLESS_YML = PROJECT_ROOT / "serverless.yml"

DEFAULT_REGION = "us-east-1"
"""The framework's region when provider.region resolves to nothing."""

_VARIABLE = re.compile(r"\$\{(?P<sources>[^{}]*)\}")


class ConfigError(Exception):
    """serverless.yml cannot be resolved offline for this stage; the message says where."""


def load_config(config_file: Path = SERVERLESS_YML) -> dict[str, Any]:
    """serverless.yml as data, its `${...}` variables left as written."""
    config: dict[str, Any] = yaml.safe_load(config_file.read_text())
    return config


@dataclass(frozen=True)
class Route:
    """One `httpApi` route of serverless.yml: `GET /items/{item_id}`."""

    method: str
    path: str

    @classmethod
    def parse(cls, key: str) -> Route:
        """The route `METHOD /path` names."""
        method, _, path = key.partition(" ")
        return cls(method.upper(), path)

    @property
    def key(self) -> str:
        """The route as serverless.yml and API Gateway's `routeKey` spell it."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Function:
    """One function of serverless.yml: name, handler, dependency groups and routes."""

    name: str
    handler: str  # "functions/health/handler.handler": the file's path, then the attribute
    groups: tuple[str, ...]
    routes: tuple[Route, ...] = ()

    @property
    def code_dir(self) -> Path:
        """The function's package, which its zip ships beside `shared/`."""
        return Path(self.handler).parent

    @property
    def handler_file(self) -> Path:
        """The handler's module file: `functions/health/handler.py`."""
        return Path(self.handler.rpartition(".")[0] + ".py")

    @property
    def handler_name(self) -> str:
        """The handler's attribute in its module."""
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True)
class Service:
    """The service as serverless.yml declares it."""

    name: str
    python_version: str
    architecture: str
    functions: tuple[Function, ...]
    root: Path = PROJECT_ROOT

    @property
    def routes(self) -> dict[Route, Function]:
        """Every route, and the function that serves it."""
        return {route: function for function in self.functions for route in function.routes}


def _routes(events: list[dict[str, Any]]) -> tuple[Route, ...]:
    """The `httpApi` events, written `METHOD /path` or as `{method, path}`."""
    routes = []
    for event in events:
        spec = event.get("httpApi") if isinstance(event, Mapping) else None
        if isinstance(spec, str):
            routes.append(Route.parse(spec))
        elif isinstance(spec, Mapping):
            routes.append(Route(str(spec.get("method", "*")).upper(), str(spec.get("path", "*"))))
    return tuple(routes)


def read_service(config_file: Path = SERVERLESS_YML) -> Service:
    """The runtime, architecture, functions and routes; serverless.yml's `custom.dependencyGroups`
    name what each function ships besides the core dependencies."""
    config = load_config(config_file)
    provider: Mapping[str, Any] = config["provider"]
    groups: Mapping[str, list[str]] = (config.get("custom") or {}).get("dependencyGroups") or {}
    functions = tuple(
        Function(
            name=name,
            handler=spec["handler"],
            groups=tuple(groups.get(name, [])),
            routes=_routes(spec.get("events") or []),
        )
        for name, spec in (config.get("functions") or {}).items()
    )
    return Service(
        name=str(config["service"]),
        python_version=str(provider["runtime"]).removeprefix("python"),
        architecture=str(provider.get("architecture", "x86_64")),  # Lambda's default
        functions=functions,
        root=config_file.resolve().parent,
    )


@dataclass(frozen=True)
class _Context:
    config: Mapping[str, Any]
    stage: str | None  # None: params.default only, as `make function` reports
    options: Mapping[str, str]
    environ: Mapping[str, str]


def _param(name: str, context: _Context) -> Any:
    params: Mapping[str, Any] = context.config.get("params") or {}
    for scope in (context.stage, "default"):
        values = params.get(scope) if scope else None
        if isinstance(values, Mapping) and name in values:
            return values[name]
    return None


def resolve(value: Any, context: _Context, where: str) -> Any:
    """`value` with its `${...}` variable resolved: the first source that is set wins."""
    if not isinstance(value, str):
        return value
    match = _VARIABLE.fullmatch(value.strip())
    if match is None:
        if "${" in value:
            raise ConfigError(f"{where}: cannot resolve {value!r} without `serverless`")
        return value
    for source in (part.strip() for part in match["sources"].split(",")):
        if len(source) >= 2 and source[0] == source[-1] and source[0] in "'\"":
            return source[1:-1]
        kind, _, name = source.partition(":")
        if kind == "opt":
            found = context.options.get(name)
        elif kind == "env":
            found = context.environ.get(name)
        elif kind == "param":
            found = _param(name, context)
        else:
            raise ConfigError(f"{where}: cannot resolve {value!r} without `serverless`")
        if found is not None:
            return resolve(found, context, where)
    raise ConfigError(f"{where}: none of the sources of {value!r} is set")


def reserved_concurrency(
    config: Mapping[str, Any],
    stage: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Each function's `reservedConcurrency` for `stage` (None: the default params); functions
    without one reserve nothing and are left out."""
    context = _Context(config, stage, {}, os.environ if environ is None else environ)
    reserved = {}
    for name, spec in (config.get("functions") or {}).items():
        if not isinstance(spec, Mapping) or spec.get("reservedConcurrency") is None:
            continue
        where = f"functions.{name}.reservedConcurrency"
        value = resolve(spec["reservedConcurrency"], context, where)
        if isinstance(value, bool) or not str(value).isdigit():
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        reserved[name] = int(value)
    return reserved


@dataclass(frozen=True)
class StageConfig:
    """What the AWS-facing commands need of one stage."""

    service: str
    stage: str
    region: str
    supabase_url: str
    reserved_concurrency: dict[str, int]
    function_names: dict[str, str]  # serverless.yml's name -> the deployed Lambda function's

    @property
    def total_reserved_concurrency(self) -> int:
        """What the stage reserves of the account's concurrency, all functions together."""
        return sum(self.reserved_concurrency.values())


def read_stage_config(
    stage: str,
    region: str | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path = SERVERLESS_YML,
) -> StageConfig:
    """serverless.yml resolved for `stage`; `region` is `--region`, as given to `serverless`."""
    config = load_config(config_file)
    env = os.environ if environ is None else environ
    options = {"stage": stage} | ({"region": region} if region else {})
    context = _Context(config, stage, options, env)
    provider: Mapping[str, Any] = config.get("provider") or {}
    service = str(config["service"])
    resolved_region = resolve(provider.get("region"), context, "provider.region")
    environment: Mapping[str, Any] = provider.get("environment") or {}
    supabase_url = resolve(
        environment.get("SUPABASE_URL", ""), context, "provider.environment.SUPABASE_URL"
    )
    functions: Mapping[str, Any] = config.get("functions") or {}
    return StageConfig(
        service=service,
        stage=stage,
        region=str(region or resolved_region or DEFAULT_REGION),
        supabase_url=str(supabase_url or "").strip(),
        reserved_concurrency=reserved_concurrency(config, stage, env),
        function_names={
            name: str(resolve((spec or {}).get("name"), context, f"functions.{name}.name") or "")
            or f"{service}-{stage}-{name}"
            for name, spec in functions.items()
        },
    )
