"""serverless.yml's values for one stage, resolved as `serverless` resolves them, for the
commands that talk to AWS before or beside it (`make secret`, `make migrate STAGE=...`, the
checks `make package` and `make deploy` run first).

serverless.yml stays the one definition: the region is `provider.region`
(`${opt:region, env:AWS_REGION, 'us-east-1'}`), never the AWS profile's region or
AWS_DEFAULT_REGION, which `serverless` ignores; the Supabase URL is `params.<stage>.supabaseUrl`
else `params.default.supabaseUrl`; each function's reserved concurrency is its
`reservedConcurrency`. Only the variable sources those use are understood (`opt:`, `env:`,
`param:`, quoted literals, fallbacks after commas); anything else is refused in one line rather
than guessed. tests/package/test_stage_config.py compares the result with `serverless print`.
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
    "ConfigError",
    "StageConfig",
    "read_stage_config",
    "reserved_concurrency",
    "resolve",
]

DEFAULT_REGION = "us-east-1"
"""The framework's region when provider.region resolves to nothing."""

_VARIABLE = re.compile(r"\$\{(?P<sources>[^{}]*)\}")


class ConfigError(Exception):
    """serverless.yml cannot be resolved offline for this stage; the message says where."""


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
    config_file: Path = PROJECT_ROOT / "serverless.yml",
) -> StageConfig:
    """serverless.yml resolved for `stage`; `region` is `--region`, as given to `serverless`."""
    config: dict[str, Any] = yaml.safe_load(config_file.read_text())
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
