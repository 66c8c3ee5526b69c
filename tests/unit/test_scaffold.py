"""`make function`: what it writes, how it edits serverless.yml, what it refuses.

Each test scaffolds into a temporary folder holding a copy of the project's serverless.yml,
under names that copy does not declare yet: a user may well have run the README's own example,
`make function NAME=orders`.
The generated code is linted, and its test run against a real stack, by
tests/package/test_adaptability.py.
"""

from __future__ import annotations

import difflib
import json
import shutil
from itertools import chain, count
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import PROJECT_ROOT
from infra.scaffold import DEFAULT_CONCURRENCY, ROLES, Names, Plan, main, plan, write
from infra.serverless_config import read_stage_config


def absent(name: str) -> Names:
    """`name`, else `name2`, `name3`, ...: the first the project's serverless.yml lacks."""
    declared = yaml.safe_load((PROJECT_ROOT / "serverless.yml").read_text())["functions"]
    candidates = chain([name], (f"{name}{number}" for number in count(2)))
    return Names(next(candidate for candidate in candidates if candidate not in declared))


ORDERS, REPORTS, ORDER_LINES = absent("orders"), absent("reports"), absent("order_lines")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with the project's serverless.yml and function roles, and no function code."""
    shutil.copy2(PROJECT_ROOT / "serverless.yml", tmp_path / "serverless.yml")
    (tmp_path / ROLES).parent.mkdir(parents=True)
    shutil.copy2(PROJECT_ROOT / ROLES, tmp_path / ROLES)
    return tmp_path


def config_of(root: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((root / "serverless.yml").read_text())
    return config


def tree(root: Path) -> dict[str, str]:
    """Every file below `root` with its content."""
    return {
        str(path.relative_to(root)): path.read_text() for path in root.rglob("*") if path.is_file()
    }


def test_a_fastapi_function_gets_a_route_a_test_and_its_dependency_group(
    project: Path,
) -> None:
    before = config_of(project)

    assert main([ORDER_LINES.name], project) == 0

    after = config_of(project)
    function = after["functions"][ORDER_LINES.name]
    assert (project / Path(function["handler"]).parent / "handler.py").is_file()
    assert (project / "functions" / ORDER_LINES.name / "routes.py").is_file()
    assert (
        f"/{ORDER_LINES.path}"
        in (project / "functions" / ORDER_LINES.name / "routes.py").read_text()
    )
    assert function["events"] == [{"httpApi": f"GET /{ORDER_LINES.path}"}]
    assert after["custom"]["dependencyGroups"][ORDER_LINES.name] == ["fastapi", "auth"]
    assert after["params"]["default"][ORDER_LINES.concurrency_param] == DEFAULT_CONCURRENCY
    assert function["reservedConcurrency"] == f"${{param:{ORDER_LINES.concurrency_param}}}"
    test = (project / "tests" / "integration" / f"test_{ORDER_LINES.name}.py").read_text()
    assert f"from functions.{ORDER_LINES.name}.handler import handler" in test
    assert f'http_event("GET /{ORDER_LINES.path}")' in test
    # Everything already declared is still there, unchanged.
    assert {name: after["functions"][name] for name in before["functions"]} == before["functions"]


@pytest.mark.parametrize("existing", list(config_of(PROJECT_ROOT)["functions"]))
def test_the_new_entry_has_the_form_of_every_existing_one(project: Path, existing: str) -> None:
    main([ORDERS.name, "--kind", "plain"], project)

    functions = config_of(project)["functions"]
    spelled = json.dumps(functions[existing])
    # Both spellings of the name: `existing` itself, and its model's in the role's logical id.
    spelled = spelled.replace(Names(existing).model, ORDERS.model)
    renamed = json.loads(spelled.replace(existing, ORDERS.name))
    for key in ("events", "description"):
        del renamed[key], functions[ORDERS.name][key]
    assert functions[ORDERS.name] == renamed


def test_the_printed_total_is_what_make_deploy_checks_against_the_account(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = read_stage_config("dev", config_file=project / "serverless.yml")

    main([ORDERS.name], project)

    after = read_stage_config("dev", config_file=project / "serverless.yml")
    total = after.total_reserved_concurrency
    assert total == before.total_reserved_concurrency + DEFAULT_CONCURRENCY
    printed = capsys.readouterr().out
    assert f"makes {total} for all functions" in printed
    assert "with keepConnection on, that many clients stay connected even while idle" in printed


def roles_of(root: Path) -> dict[str, Any]:
    roles: dict[str, Any] = yaml.safe_load((root / ROLES).read_text())["Resources"]
    return roles


def secrets_read_by(role: dict[str, Any]) -> str:
    [statement] = [
        statement
        for statement in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if statement["Action"] == "secretsmanager:GetSecretValue"
    ]
    return str(statement["Resource"])


@pytest.mark.parametrize(
    ("kind", "secrets"),
    [("fastapi", "verifiesTokens"), ("plain", "database")],
)
def test_a_function_gets_a_role_of_its_own_reading_what_its_kind_reads(
    project: Path, kind: str, secrets: str
) -> None:
    before = (project / ROLES).read_text()

    assert main([ORDER_LINES.name, "--kind", kind], project) == 0

    after = (project / ROLES).read_text()
    roles = roles_of(project)
    assert after.startswith(before)  # appended; the other roles are as they were
    role = f"{ORDER_LINES.model}Role"
    assert config_of(project)["functions"][ORDER_LINES.name]["role"] == role
    assert secrets_read_by(roles[role]) == f"${{self:custom.functionSecrets.{secrets}}}"
    log_group = f"/aws/lambda/${{self:service}}-${{sls:stage}}-{ORDER_LINES.name}:*"
    assert log_group in after
    # The same form as every role already there, but for the names.
    health = json.dumps(roles["HealthRole"]).replace("health", ORDER_LINES.name)
    assert json.loads(health.replace("database", secrets)) == roles[role]


def test_a_plain_function_has_no_routes_and_no_dependency_group(project: Path) -> None:
    assert main([REPORTS.name, "--kind", "plain"], project) == 0

    config = config_of(project)
    handler = (project / "functions" / REPORTS.name / "handler.py").read_text()
    assert "@lambda_boundary" in handler
    assert "import FastAPI" not in handler
    assert not (project / "functions" / REPORTS.name / "routes.py").exists()
    assert REPORTS.name not in config["custom"]["dependencyGroups"]
    assert config["functions"][REPORTS.name]["events"] == [{"httpApi": f"GET /{REPORTS.path}"}]


def test_serverless_yml_only_gains_lines_each_where_its_kind_is(project: Path) -> None:
    original = (project / "serverless.yml").read_text().splitlines()

    main([ORDERS.name], project)

    edited = (project / "serverless.yml").read_text().splitlines()
    assert [line for line in difflib.ndiff(original, edited) if line.startswith("- ")] == []
    # The parameter follows the last one like it, and what followed that (a comment) follows it.
    last = max(
        i
        for i, line in enumerate(original[: original.index("provider:")])
        if "Concurrency:" in line
    )
    added = edited.index(f"    {ORDERS.concurrency_param}: {DEFAULT_CONCURRENCY}")
    assert edited[added - 1 : added + 2 : 2] == original[last : last + 2]
    # The function comes after the last one, set apart by a blank line, and what followed the
    # functions (a blank line, the next key) follows it.
    start = edited.index(f"  {ORDERS.name}:")
    end = next(i for i in range(start + 1, len(edited)) if not edited[i].startswith("    "))
    assert edited[start - 1] == ""
    assert edited[end:] == original[len(original) - (len(edited) - end) :]
    assert edited[end] == ""


@pytest.mark.parametrize(
    "name", ["Orders", "1st", "order-lines", "_orders", "", "class", "orders.v2"]
)
def test_a_bad_name_is_refused_in_one_line_and_nothing_is_written(
    project: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(project)

    assert main([name], project) == 2

    err = capsys.readouterr().err
    assert err.startswith("scaffold: NAME")
    assert err.count("\n") == 1
    assert tree(project) == before


def test_an_existing_function_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = next(iter(config_of(project)["functions"]))
    before = tree(project)

    assert main([existing], project) == 2

    assert f"scaffold: function {existing!r} already exists" in capsys.readouterr().err
    assert tree(project) == before


def test_a_folder_of_that_name_is_refused_even_when_serverless_yml_lacks_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "functions" / REPORTS.name).mkdir(parents=True)
    before = tree(project)

    assert main([REPORTS.name], project) == 2

    assert f"functions/{REPORTS.name}" in capsys.readouterr().err
    assert tree(project) == before


def test_a_role_of_that_name_is_refused_even_when_serverless_yml_lacks_the_function(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roles = (project / ROLES).read_text()
    (project / ROLES).write_text(roles.replace("HealthRole:", "ReportsRole:"))
    before = tree(project)

    assert main(["reports"], project) == 2

    assert f"the role ReportsRole in {ROLES}" in capsys.readouterr().err
    assert tree(project) == before


def test_a_route_another_function_answers_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([ORDERS.name], project)
    text = (project / "serverless.yml").read_text()
    (project / "serverless.yml").write_text(
        text.replace(f"GET /{ORDERS.path}", f"GET /{REPORTS.path}")
    )
    before = tree(project)

    assert main([REPORTS.name, "--kind", "plain"], project) == 2

    assert (
        f"GET /{REPORTS.path} is already routed to the function {ORDERS.name!r}"
        in capsys.readouterr().err
    )
    assert tree(project) == before


def test_a_write_that_fails_halfway_puts_everything_back(project: Path) -> None:
    scaffold = plan(ORDERS.name, root=project)
    (project / "blocker").write_text("a file where the last write needs a folder")
    before = tree(project)
    failing = Plan(
        root=project,
        files={**scaffold.files, Path("blocker", "x.py"): ""},
        concurrency_total=scaffold.concurrency_total,
    )

    with pytest.raises(NotADirectoryError):
        write(failing)

    assert tree(project) == before
    assert not (project / "functions").exists()
