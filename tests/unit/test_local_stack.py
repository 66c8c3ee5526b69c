"""The local stack's settings, PgBouncer's config per version, and where it finds the servers
on Debian and macOS; no servers are started (binary discovery runs against fake trees)."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path

import pytest

from infra.local_stack import StackConfig, StackError, config_from_env
from infra.local_stack.binaries import find_binaries
from infra.local_stack.pgbouncer import parse_pgbouncer_version, pgbouncer_ini

# `pgbouncer --version` as Debian 12 and a build of 1.25.2 print it.
PGBOUNCER_1_18 = """PgBouncer 1.18.0
libevent 2.1.12-stable
adns: c-ares 1.18.1
tls: OpenSSL 3.0.19 27 Jan 2026
systemd: yes
"""
PGBOUNCER_1_25 = """PgBouncer 1.25.2
libevent 2.1.12-stable
adns: evdns2
tls: OpenSSL 3.0.19 27 Jan 2026
"""


def settings_of(ini: str) -> dict[str, str]:
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=(";",))
    parser.read_string(ini)
    return dict(parser["pgbouncer"])


def ini_for(version_output: str, server_login_retry: int = 1) -> dict[str, str]:
    stack = StackConfig(state_dir=Path("/state"), server_login_retry=server_login_retry)
    version = parse_pgbouncer_version(version_output)
    return settings_of(pgbouncer_ini(stack, version))


@pytest.mark.parametrize(
    ("output", "version"),
    [
        (PGBOUNCER_1_18, (1, 18, 0)),
        (PGBOUNCER_1_25, (1, 25, 2)),
        ("PgBouncer 1.21\n", (1, 21, 0)),
        ("PgBouncer 1.24.1 (Homebrew)\n", (1, 24, 1)),
    ],
)
def test_version_is_read_from_pgbouncer_version_output(
    output: str, version: tuple[int, int, int]
) -> None:
    assert parse_pgbouncer_version(output) == version


@pytest.mark.parametrize("output", [PGBOUNCER_1_18, "PgBouncer 1.20.1\n"])
def test_pgbouncer_before_1_21_gets_no_setting_it_does_not_know(output: str) -> None:
    settings = ini_for(output)

    assert "max_prepared_statements" not in settings  # they would refuse to start
    assert settings["pool_mode"] == "transaction"
    assert settings["auth_type"] == "scram-sha-256"


@pytest.mark.parametrize("output", [PGBOUNCER_1_25, "PgBouncer 1.21.0\n"])
def test_pgbouncer_1_21_and_later_keeps_prepared_statements_off_like_supavisor(
    output: str,
) -> None:
    settings = ini_for(output)

    # 1.24+ defaults to 200, which would let psycopg's prepared statements through.
    assert settings["max_prepared_statements"] == "0"
    assert settings["pool_mode"] == "transaction"
    assert settings["auth_type"] == "scram-sha-256"


def test_server_login_retry_is_short_by_default_and_configurable() -> None:
    assert ini_for(PGBOUNCER_1_18)["server_login_retry"] == "1"
    assert ini_for(PGBOUNCER_1_25, server_login_retry=3)["server_login_retry"] == "3"
    with pytest.raises(ValueError, match="server_login_retry"):
        StackConfig(state_dir=Path("/state"), server_login_retry=-1)


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("prefix", ["opt/homebrew", "usr/local"])  # Apple silicon, Intel
def test_homebrew_keg_only_postgresql_and_linked_pgbouncer_are_found(
    tmp_path: Path, prefix: str
) -> None:
    initdb = executable(tmp_path / prefix / "opt/postgresql@16/bin/initdb")
    pgbouncer = executable(tmp_path / prefix / "bin/pgbouncer")

    found = find_binaries(root=tmp_path, search_path="")

    assert found is not None
    assert found.initdb == str(initdb)
    assert found.pg_ctl == str(initdb.parent / "pg_ctl")
    assert found.pgbouncer == str(pgbouncer)


def test_the_newest_postgresql_wins_and_debian_comes_first(tmp_path: Path) -> None:
    for version in (15, 17):
        executable(tmp_path / f"opt/homebrew/opt/postgresql@{version}/bin/initdb")
    executable(tmp_path / "opt/homebrew/bin/pgbouncer")

    homebrew = find_binaries(root=tmp_path, search_path="")
    debian_initdb = executable(tmp_path / "usr/lib/postgresql/15/bin/initdb")
    debian_pgbouncer = executable(tmp_path / "usr/sbin/pgbouncer")
    debian = find_binaries(root=tmp_path, search_path="")

    assert homebrew is not None
    assert homebrew.initdb == str(tmp_path / "opt/homebrew/opt/postgresql@17/bin/initdb")
    assert debian is not None
    assert debian.pg_ctl == str(debian_initdb.parent / "pg_ctl")
    assert debian.pgbouncer == str(debian_pgbouncer)


def test_programs_on_path_win_over_fixed_locations(tmp_path: Path) -> None:
    executable(tmp_path / "opt/homebrew/opt/postgresql@16/bin/initdb")
    executable(tmp_path / "opt/homebrew/bin/pgbouncer")
    source_build = executable(tmp_path / "home/me/pgbouncer-1.25.2/pgbouncer")
    postgres_build = executable(tmp_path / "home/me/postgresql-17/bin/initdb")
    linked = tmp_path / "home/me/bin/initdb"
    linked.parent.mkdir()
    linked.symlink_to(postgres_build)

    path = os.pathsep.join([str(source_build.parent), str(linked.parent)])
    found = find_binaries(root=tmp_path, search_path=path)

    assert found is not None
    assert found.pgbouncer == str(source_build)
    # The link leads to its installation, where pg_ctl lies beside initdb.
    assert found.pg_ctl == str(postgres_build.resolve().parent / "pg_ctl")


@pytest.mark.parametrize(
    "present",
    [["opt/homebrew/opt/postgresql@16/bin/initdb"], ["opt/homebrew/bin/pgbouncer"], []],
)
def test_either_program_missing_means_not_found(tmp_path: Path, present: list[str]) -> None:
    for path in present:
        executable(tmp_path / path)

    assert find_binaries(root=tmp_path, search_path="") is None


def test_the_dev_stack_takes_its_settings_from_the_environment() -> None:
    config = config_from_env(
        {
            "LOCAL_STACK_STATE_DIR": "/srv/stack",
            "LOCAL_POSTGRES_PORT": "15432",
            "LOCAL_POOLER_PORT": "16543",
            "LOCAL_DB_PASSWORD": "s3cret",
        }
    )
    defaults = config_from_env({})

    assert (config.state_dir, config.postgres_port, config.pooler_port, config.password) == (
        Path("/srv/stack"),
        15432,
        16543,
        "s3cret",
    )
    # Beside the Supabase CLI's ports (54320-54329), so `supabase start` runs alongside;
    # Supavisor's transaction-mode port, as the README says.
    assert (defaults.postgres_port, defaults.pooler_port) == (54422, 6543)


@pytest.mark.parametrize("variable", ["LOCAL_POSTGRES_PORT", "LOCAL_POOLER_PORT"])
def test_a_port_that_is_not_a_number_names_its_variable(variable: str) -> None:
    with pytest.raises(StackError, match=f"^{variable} must be a port number, not 'x1'$"):
        config_from_env({variable: "x1"})


def test_clashing_ports_are_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="must differ"):
        StackConfig(state_dir=Path("/state"), postgres_port=6543, pooler_port=6543)
