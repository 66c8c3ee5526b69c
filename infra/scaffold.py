"""Scaffold a function: `make function NAME=orders [KIND=fastapi|plain]`.

    python -m infra.scaffold orders                 # FastAPI + Mangum: a router, one route
    python -m infra.scaffold orders --kind plain    # a plain handler, no FastAPI

Writes the function's package from infra/templates/, its integration test, its entry in
serverless.yml (route, zip, role, reserved concurrency, SnapStart, dependency group) and its IAM
role, so a new function deploys and is tested from its first minute. serverless.yml is edited
round-trip and refused unless the edit only adds lines, so its comments stay; nothing is
written unless everything can be.

FastAPI is the default: a function usually grows into a resource with several routes, worth
FastAPI's import time at a cold start; a plain handler suits one hot endpoint (`make bench`).
"""

from __future__ import annotations

import argparse
import difflib
import io
import keyword
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Literal, get_args

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from infra import PROJECT_ROOT
from infra.serverless_config import (
    ConfigError,
    Route,
    Service,
    read_service,
    reserved_concurrency,
)

type Kind = Literal["fastapi", "plain"]

KINDS: tuple[Kind, ...] = get_args(Kind.__value__)
DEFAULT_KIND: Kind = "fastapi"
DEFAULT_CONCURRENCY = 10
"""Reserved concurrency of a new function: pooler clients it may hold at once
(docs/deploying.md, "Connection budget"); raise it in serverless.yml's params if needed."""

TEMPLATES = Path(__file__).resolve().parent / "templates"
ROLES = Path("infra", "cloudformation", "function-roles.yml")
"""Where each function's IAM role is defined; serverless.yml's `resources:` includes it."""
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
CONCURRENCY_SUFFIX = "Concurrency"


class ScaffoldError(Exception):
    """The function cannot be scaffolded as asked; the message says why, in one line."""


@dataclass(frozen=True)
class Names:
    """How one function is spelled in each place it appears."""

    name: str

    @property
    def path(self) -> str:
        """The URL path segment: `order_lines` answers `/order-lines`."""
        return self.name.replace("_", "-")

    @property
    def route(self) -> Route:
        """The one route a scaffolded function answers."""
        return Route("GET", f"/{self.path}")

    @property
    def title(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def model(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def role(self) -> str:
        """The logical id of the function's IAM role in the CloudFormation template."""
        return f"{self.model}Role"

    @property
    def concurrency_param(self) -> str:
        head, *rest = self.name.split("_")
        return head + "".join(part.capitalize() for part in rest) + CONCURRENCY_SUFFIX

    def substitutions(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "title": self.title, "model": self.model}


@dataclass(frozen=True)
class Plan:
    """Everything a scaffold writes, rendered: file contents by path relative to `root`."""

    root: Path
    files: dict[Path, str]
    concurrency_total: int


def round_trip_yaml() -> YAML:
    """A round-trip YAML in serverless.yml's layout: 2-space maps, lists indented under keys."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def check_name(name: str) -> None:
    """Refuse a name that cannot be a Python package, a URL segment and a CloudFormation key."""
    if not NAME_PATTERN.fullmatch(name):
        raise ScaffoldError(
            f"NAME must be a lowercase Python identifier (a-z, 0-9, _; a letter first), "
            f"not {name!r}"
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"NAME {name!r} is a Python keyword, so it cannot name a package")


def check_free(
    names: Names, service: Service, roles: dict[str, Any], paths: list[Path], root: Path
) -> None:
    """Refuse a function that exists in any place the scaffold would write."""
    taken = [str(path) for path in paths if (root / path).exists()]
    if names.role in (roles.get("Resources") or {}):
        taken.insert(0, f"the role {names.role} in {ROLES}")
    if names.name in {function.name for function in service.functions}:
        taken.insert(0, f"functions.{names.name} in serverless.yml")
    if taken:
        raise ScaffoldError(f"function {names.name!r} already exists: {', '.join(taken)}")
    if owner := service.routes.get(names.route):
        raise ScaffoldError(f"{names.route.key} is already routed to the function {owner.name!r}")


def render_files(names: Names, kind: Kind) -> dict[Path, str]:
    """The function's package and its integration test, rendered."""
    templates = {
        Path("functions", names.name, "__init__.py"): TEMPLATES / "__init__.py.tmpl",
        Path("functions", names.name, "handler.py"): TEMPLATES / kind / "handler.py.tmpl",
        Path("tests", "integration", f"test_{names.name}.py"): TEMPLATES / "test.py.tmpl",
    }
    if kind == "fastapi":
        templates[Path("functions", names.name, "routes.py")] = TEMPLATES / kind / "routes.py.tmpl"
    return {
        path: Template(template.read_text()).substitute(names.substitutions())
        for path, template in templates.items()
    }


@dataclass(frozen=True)
class _CommentSlot:
    """One place ruamel.yaml keeps the comment (or blank lines) that follows a line."""

    entries: list[Any]
    index: int

    def take(self) -> Any:
        comment, self.entries[self.index] = self.entries[self.index], None
        return comment

    def peek(self) -> Any:
        return self.entries[self.index]

    def put(self, comment: Any) -> None:
        self.entries[self.index] = comment


def _trailing_slot(mapping: CommentedMap, key: Any) -> _CommentSlot:
    """Where the comment after the entry `key` is kept: ruamel.yaml keeps it on the innermost
    entry that ends on the same line, so what follows a block sits deep inside it."""
    slots: list[_CommentSlot] = []
    node: CommentedMap | CommentedSeq = mapping
    while True:
        in_map = isinstance(node, CommentedMap)
        entries = node.ca.items.setdefault(
            key, [None, None, None, None] if in_map else [None, None]
        )
        slots.append(_CommentSlot(entries, 2 if in_map else 0))
        child = node[key]
        if isinstance(child, CommentedMap) and child:
            node, key = child, next(reversed(child))
        elif isinstance(child, CommentedSeq) and child:
            node, key = child, len(child) - 1
        else:
            break
    filled = [slot for slot in slots if slot.entries[slot.index] is not None]
    return (filled or slots)[-1]


def insert_after(mapping: CommentedMap, after: Any, key: str, value: Any) -> None:
    """Insert `key` right after `after` (at the end if None): whatever followed `after` (a
    comment, a blank line) then follows the new entry."""
    if after is None:
        mapping.insert(len(mapping), key, value)
        return
    trailing = _trailing_slot(mapping, after).take()
    mapping.insert(list(mapping).index(after) + 1, key, value)
    if trailing is not None:
        _trailing_slot(mapping, key).put(trailing)


def _child_map(parent: CommentedMap, key: str) -> CommentedMap:
    """parent[key] as a mapping, created (empty, at the end) when missing."""
    child = parent.get(key)
    if child is None:
        child = parent[key] = CommentedMap()
    if not isinstance(child, CommentedMap):
        raise ScaffoldError(f"serverless.yml: {key} must be a mapping")
    return child


def _function_spec(names: Names, kind: Kind) -> CommentedMap:
    """The function's entry under `functions:`, in the form of the ones already there."""
    description = "FastAPI + Mangum" if kind == "fastapi" else "plain handler"
    zip_path = "${self:custom.artifactsDir}/" + names.name + ".zip"
    return CommentedMap(
        handler=f"functions/{names.name}/handler.handler",
        role=names.role,
        description=f"{names.title} ({description}).",
        package=CommentedMap(artifact="${env:OFFLINE_FROM_SOURCE, '" + zip_path + "'}"),
        reservedConcurrency="${param:" + names.concurrency_param + "}",
        snapStart="${strToBool(${param:snapStart})}",
        events=CommentedSeq([CommentedMap(httpApi=names.route.key)]),
    )


def register(text: str, names: Names, kind: Kind) -> tuple[str, int]:
    """serverless.yml with the function added, and the total reserved concurrency after it.

    Refused when the file does not read back unchanged, or when the edit would change or
    remove a line rather than only add some.
    """
    yaml = round_trip_yaml()
    config = yaml.load(text)
    if not isinstance(config, CommentedMap) or _dump(yaml, config) != text:
        raise ScaffoldError(
            "serverless.yml does not read back unchanged with ruamel.yaml: register the "
            "function by hand"
        )
    defaults = _child_map(_child_map(config, "params"), "default")
    concurrency = [key for key in defaults if str(key).endswith(CONCURRENCY_SUFFIX)]
    last_concurrency = concurrency[-1] if concurrency else None
    insert_after(defaults, last_concurrency, names.concurrency_param, DEFAULT_CONCURRENCY)
    if kind == "fastapi":
        groups = _child_map(_child_map(config, "custom"), "dependencyGroups")
        # FastAPI's session dependencies verify the caller's access token: PyJWT (`auth`).
        group = CommentedSeq(["fastapi", "auth"])
        group.fa.set_flow_style()
        insert_after(groups, next(reversed(groups), None), names.name, group)
    functions = _child_map(config, "functions")
    existing = list(functions)
    # The blank line that separates the functions before the last one separates the new one.
    gap = _trailing_slot(functions, existing[-2]).peek() if len(existing) > 1 else None
    insert_after(
        functions, existing[-1] if existing else None, names.name, _function_spec(names, kind)
    )
    if existing and isinstance(gap, CommentToken) and not gap.value.strip():
        _trailing_slot(functions, existing[-1]).put(CommentToken(gap.value, CommentMark(0)))
    edited = _dump(yaml, config)
    diff = difflib.ndiff(text.splitlines(), edited.splitlines())
    removed = [line for line in diff if line.startswith("- ")]
    if removed:
        raise ScaffoldError(f"serverless.yml: the edit would change the line {removed[0][2:]!r}")
    # The sum `make deploy` checks against the account (infra/stage.py), for the default params.
    try:
        total = sum(reserved_concurrency(yaml.load(edited)).values())
    except ConfigError as error:
        raise ScaffoldError(f"serverless.yml: {error}") from None
    return edited, total


def role_block(names: Names, kind: Kind) -> str:
    """The function's role as function-roles.yml holds it, a blank line first."""
    secrets = "verifiesTokens" if kind == "fastapi" else "database"
    role = Template((TEMPLATES / "role.yml.tmpl").read_text())
    return role.substitute(names.substitutions(), secrets=secrets)


def add_role(text: str, names: Names, kind: Kind) -> str:
    """function-roles.yml with the function's role appended (nothing else changes)."""
    return text + role_block(names, kind)


def plan(name: str, kind: Kind = DEFAULT_KIND, root: Path = PROJECT_ROOT) -> Plan:
    """Check the name and render every file the scaffold writes; write nothing."""
    check_name(name)
    names = Names(name)
    serverless = root / "serverless.yml"
    text = serverless.read_text()
    files = render_files(names, kind)
    package = Path("functions", name)
    outside = [path for path in files if not path.is_relative_to(package)]
    roles = (root / ROLES).read_text()
    check_free(
        names, read_service(serverless), YAML(typ="safe").load(roles), [package, *outside], root
    )
    files[Path("serverless.yml")], total = register(text, names, kind)
    files[ROLES] = add_role(roles, names, kind)
    return Plan(root=root, files=files, concurrency_total=total)


def write(plan: Plan) -> list[Path]:
    """Write every file of the plan, each beside its target then renamed into place; on any
    failure put back what was there before, so the tree is as it was."""
    created: list[Path] = []
    replaced: dict[Path, str | None] = {}
    try:
        for relative, content in plan.files.items():
            target = plan.root / relative
            for parent in reversed(target.parents):
                if not parent.exists():
                    parent.mkdir()
                    created.append(parent)
            before = target.read_text() if target.exists() else None
            staged = target.with_name(f".{target.name}.scaffold")
            try:
                staged.write_text(content)
                os.replace(staged, target)
            finally:
                if staged.exists():
                    staged.unlink()
            replaced[target] = before
    except BaseException:
        for target, before in replaced.items():
            if before is None:
                target.unlink()
            else:
                target.write_text(before)
        for directory in reversed(created):
            directory.rmdir()
        raise
    return list(replaced)


def main(argv: list[str] | None = None, root: Path = PROJECT_ROOT) -> int:
    """Scaffold; a refusal is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m infra.scaffold", description=__doc__)
    parser.add_argument("name", help="the function's name: a lowercase Python identifier")
    parser.add_argument("--kind", choices=KINDS, default=DEFAULT_KIND)
    args = parser.parse_args(argv)
    try:
        scaffold = plan(args.name, args.kind, root)
    except ScaffoldError as error:
        sys.stderr.write(f"scaffold: {error}\n")
        return 2
    for path in write(scaffold):
        sys.stdout.write(f"wrote {path.relative_to(scaffold.root)}\n")
    names = Names(args.name)
    sys.stdout.write(
        f"{names.route.key} is served by functions/{args.name}/ (`make dev`); its test: "
        f"`.venv/bin/pytest tests/integration/test_{args.name}.py`. Reserved concurrency "
        f"{names.concurrency_param} = {DEFAULT_CONCURRENCY} makes {scaffold.concurrency_total} "
        "for all functions: keep it under the pooler's client limit; with keepConnection on, "
        "that many clients stay connected even while idle (docs/deploying.md, "
        '"Connection budget"). What to edit next: README, "Adding a function".\n'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
