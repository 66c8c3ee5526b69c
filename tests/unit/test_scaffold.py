"""`make function`: what it writes, how it edits serverless.yml, what it refuses.

Each test scaffolds into a temporary folder holding a copy of the project's serverless.yml.
The generated code is linted, and its test run against a real stack, by
tests/package/test_adaptability.py.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import PROJECT_ROOT
from infra.scaffold import DEFAULT_CONCURRENCY, ROLES, Names, Plan, main, plan, write


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

    assert main(["order_lines"], project) == 0

    after = config_of(project)
    function = after["functions"]["order_lines"]
    assert (project / Path(function["handler"]).parent / "handler.py").is_file()
    assert (project / "functions" / "order_lines" / "routes.py").is_file()
    assert "/order-lines" in (project / "functions" / "order_lines" / "routes.py").read_text()
    assert function["events"] == [{"httpApi": "GET /order-lines"}]
    assert after["custom"]["dependencyGroups"]["order_lines"] == ["fastapi", "auth"]
    assert after["params"]["default"]["orderLinesConcurrency"] == DEFAULT_CONCURRENCY
    assert function["reservedConcurrency"] == "${param:orderLinesConcurrency}"
    test = (project / "tests" / "integration" / "test_order_lines.py").read_text()
    assert "from functions.order_lines.handler import handler" in test
    assert 'http_event("GET /order-lines")' in test
    # Everything already declared is still there, unchanged.
    assert {name: after["functions"][name] for name in before["functions"]} == before["functions"]


@pytest.mark.parametrize("existing", list(config_of(PROJECT_ROOT)["functions"]))
def test_the_new_entry_has_the_form_of_every_existing_one(project: Path, existing: str) -> None:
    main(["orders", "--kind", "plain"], project)

    functions = config_of(project)["functions"]
    spelled = json.dumps(functions[existing])
    # Both spellings of the name: `existing` itself, and its model's in the role's logical id.
    spelled = spelled.replace(Names(existing).model, Names("orders").model)
    renamed = json.loads(spelled.replace(existing, "orders"))
    for key in ("events", "description"):
        del renamed[key], functions["orders"][key]
    assert functions["orders"] == renamed


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

    assert main(["order_lines", "--kind", kind], project) == 0

    after = (project / ROLES).read_text()
    roles = roles_of(project)
    assert after.startswith(before)  # appended; the other roles are as they were
    assert config_of(project)["functions"]["order_lines"]["role"] == "OrderLinesRole"
    assert secrets_read_by(roles["OrderLinesRole"]) == f"${{self:custom.functionSecrets.{secrets}}}"
    log_group = "/aws/lambda/${self:service}-${sls:stage}-order_lines:*"
    assert log_group in after
    # The same form as every role already there, but for the names.
    health = json.dumps(roles["HealthRole"]).replace("health", "order_lines")
    assert json.loads(health.replace("database", secrets)) == roles["OrderLinesRole"]


def test_a_plain_function_has_no_routes_and_no_dependency_group(project: Path) -> None:
    assert main(["reports", "--kind", "plain"], project) == 0

    config = config_of(project)
    handler = (project / "functions" / "reports" / "handler.py").read_text()
    assert "@lambda_boundary" in handler
    assert "import FastAPI" not in handler
    assert not (project / "functions" / "reports" / "routes.py").exists()
    assert "reports" not in config["custom"]["dependencyGroups"]
    assert config["functions"]["reports"]["events"] == [{"httpApi": "GET /reports"}]


def test_serverless_yml_only_gains_lines_each_where_its_kind_is(project: Path) -> None:
    original = (project / "serverless.yml").read_text().splitlines()

    main(["orders"], project)

    edited = (project / "serverless.yml").read_text().splitlines()
    assert [line for line in difflib.ndiff(original, edited) if line.startswith("- ")] == []
    # The parameter follows the last one like it, and what followed that (a comment) follows it.
    last = max(
        i
        for i, line in enumerate(original[: original.index("provider:")])
        if "Concurrency:" in line
    )
    added = edited.index(f"    ordersConcurrency: {DEFAULT_CONCURRENCY}")
    assert edited[added - 1 : added + 2 : 2] == original[last : last + 2]
    # The function comes after the last one, set apart by a blank line, and what followed the
    # functions (a blank line, the next key) follows it.
    start = edited.index("  orders:")
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
    (project / "functions" / "reports").mkdir(parents=True)
    before = tree(project)

    assert main(["reports"], project) == 2

    assert "functions/reports" in capsys.readouterr().err
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
    main(["orders"], project)
    text = (project / "serverless.yml").read_text()
    (project / "serverless.yml").write_text(text.replace("GET /orders", "GET /reports"))
    before = tree(project)

    assert main(["reports", "--kind", "plain"], project) == 2

    assert "GET /reports is already routed to the function 'orders'" in capsys.readouterr().err
    assert tree(project) == before


def test_a_write_that_fails_halfway_puts_everything_back(project: Path) -> None:
    scaffold = plan("orders", root=project)
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
