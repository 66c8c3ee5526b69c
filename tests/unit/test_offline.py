"""Which origins `make dev` lets browsers call the local API from (CORS_ORIGINS)."""

from __future__ import annotations

import pytest

from infra.offline import DEFAULT_CORS_ORIGINS, CorsOriginsError, local_cors_origins


def test_local_origins_default_to_a_vite_dev_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORS_ORIGINS", raising=False)

    assert local_cors_origins() == DEFAULT_CORS_ORIGINS == "http://localhost:5173"


def test_cors_origins_names_the_local_frontends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "http://localhost:4200,http://127.0.0.1:8080")

    assert local_cors_origins() == "http://localhost:4200,http://127.0.0.1:8080"


@pytest.mark.parametrize("empty", ["", " ", ","])
def test_an_empty_list_is_refused_rather_than_served_as_every_origin(
    empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", empty)

    with pytest.raises(CorsOriginsError, match="CORS_ORIGINS is empty"):
        local_cors_origins()
