"""A rebuild needs no network: the zips' wheels come from uv's cache when it holds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.package import install_dependencies
from tests.fixtures.service import SERVICE
from tests.fixtures.stack import free_port


def test_dependencies_install_from_uvs_cache_with_the_network_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = ("fastapi", "auth")
    arch, python = SERVICE.architecture, SERVICE.python_version
    install_dependencies(groups, arch, python, tmp_path / "online")  # fills the cache if need be
    unreachable = f"http://127.0.0.1:{free_port()}"
    for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(proxy, unreachable)  # every request uv makes now fails

    install_dependencies(groups, arch, python, tmp_path / "offline")

    def installed(target: Path) -> list[str]:
        return sorted(path.name for path in target.iterdir())

    assert "psycopg_binary" in installed(tmp_path / "offline")
    assert installed(tmp_path / "offline") == installed(tmp_path / "online")
