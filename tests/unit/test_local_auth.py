"""`make token` and the JWKS `make dev` serves: tokens the functions' verifier accepts."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from jwt.algorithms import ECAlgorithm

from infra import local_auth
from infra.local_auth import DEFAULT_USER_ID, JwksServer, SigningKey
from shared._tokens import TokenVerifier
from tests.fixtures.tokens import Tokens


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KEY_FILE moved into the test's folder: the developer's own key stays untouched; and no
    SUPABASE_URL (the session's may be set), as on a machine that uses the local key."""
    path = tmp_path / ".local" / "auth" / "signing-key.json"
    monkeypatch.setattr(local_auth, "KEY_FILE", path)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    return path


@pytest.fixture
def dev_jwks(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JwksServer]:
    """The JWKS as `make dev` serves it, from the key file, on the port AUTH_PORT names."""
    key = SigningKey.load_or_create()
    server = JwksServer(lambda: {"keys": [key.public_jwk()]})
    monkeypatch.setenv("AUTH_PORT", server.supabase_url.rsplit(":", 1)[1])
    try:
        yield server
    finally:
        server.close()


def test_the_key_is_generated_once_and_kept_private(key_file: Path) -> None:
    first = SigningKey.load_or_create()
    again = SigningKey.load_or_create()

    assert again.kid == first.kid
    assert again.public_jwk() == first.public_jwk()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "d" not in first.public_jwk()  # the JWKS never carries the private part


def test_make_token_prints_a_token_the_dev_jwks_verifies(
    dev_jwks: JwksServer, capsys: pytest.CaptureFixture[str]
) -> None:
    user_id = str(uuid.uuid4())

    exit_code = local_auth.main(["token", "--user", user_id, "--role", "service_role"])
    token = capsys.readouterr().out.strip()
    claims = TokenVerifier(local_auth.local_supabase_url()).verify(token)

    assert exit_code == 0
    assert local_auth.local_supabase_url() == dev_jwks.supabase_url
    assert (claims["sub"], claims["role"], claims["aud"]) == (
        user_id,
        "service_role",
        "authenticated",
    )
    assert {"email", "session_id", "is_anonymous", "iat", "exp"} <= claims.keys()


def test_make_token_without_a_user_acts_as_one_default_user(
    dev_jwks: JwksServer, capsys: pytest.CaptureFixture[str]
) -> None:
    local_auth.main(["token"])
    local_auth.main(["token"])
    first, second = capsys.readouterr().out.split()
    verifier = TokenVerifier(dev_jwks.supabase_url)

    assert verifier.verify(first)["sub"] == verifier.verify(second)["sub"] == DEFAULT_USER_ID
    assert verifier.verify(first)["role"] == "authenticated"


def test_make_token_role_anon_prints_a_signed_out_token_without_a_user(
    dev_jwks: JwksServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = local_auth.main(["token", "--role", "anon"])
    claims = TokenVerifier(dev_jwks.supabase_url).verify(capsys.readouterr().out.strip())

    assert exit_code == 0
    assert claims["role"] == "anon"
    assert "sub" not in claims
    assert "email" not in claims


def test_an_anon_token_for_a_user_is_refused(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = local_auth.main(["token", "--role", "anon", "--user", DEFAULT_USER_ID])

    assert exit_code == 1
    assert capsys.readouterr().err == "an anon token acts for no user: leave USER out\n"


def test_a_user_that_is_not_a_uuid_is_refused(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = local_auth.main(["token", "--user", "root"])

    assert exit_code == 1
    assert capsys.readouterr().out == ""
    assert not key_file.exists()


def test_make_token_refuses_while_supabase_url_names_another_project(
    key_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`make dev` verifies that project's tokens then, so a local one would only get a 401."""
    env_file = tmp_path / ".env"
    env_file.write_text("SUPABASE_URL=https://abcdefghijklmnop.supabase.co\n")
    monkeypatch.setenv("SETTINGS_ENV_FILE", str(env_file))  # read from .env, as `make` does

    exit_code = local_auth.main(["token"])
    printed = capsys.readouterr()

    assert exit_code == 1
    assert printed.out == ""
    assert "SUPABASE_URL is set (https://abcdefghijklmnop.supabase.co)" in printed.err
    assert not key_file.exists()


def test_make_token_signs_when_supabase_url_is_the_local_one(
    dev_jwks: JwksServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SUPABASE_URL", dev_jwks.supabase_url)

    exit_code = local_auth.main(["token"])

    assert exit_code == 0
    assert TokenVerifier(dev_jwks.supabase_url).verify(capsys.readouterr().out.strip())


def test_a_service_role_token_for_a_project_from_an_imported_key(
    fresh_tokens: Tokens, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployed path: a key made with `supabase gen signing-key`, imported as a standby
    key so the project's JWKS lists it (here: the test project's JWKS)."""
    imported = SigningKey.generate()
    key_file = tmp_path / "imported.json"
    key_file.write_text(
        json.dumps(ECAlgorithm.to_jwk(imported.private_key, as_dict=True) | {"kid": imported.kid})
    )
    fresh_tokens.endpoint.keys.append(imported)
    args = ["--supabase-url", f"{fresh_tokens.supabase_url}/", "--key-file", str(key_file)]

    exit_code = local_auth.main(["token", "--role", "service_role", "--lifetime", "600", *args])
    claims = TokenVerifier(fresh_tokens.supabase_url).verify(capsys.readouterr().out.strip())

    assert exit_code == 0
    assert claims["role"] == "service_role"
    assert claims["iss"] == f"{fresh_tokens.supabase_url}/auth/v1"
    assert claims["exp"] - claims["iat"] == 600


def test_a_key_file_without_a_private_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public_only = tmp_path / "public.json"
    public_only.write_text(json.dumps(SigningKey.generate().public_jwk()))

    exit_code = local_auth.main(["token", "--key-file", str(public_only)])

    assert exit_code == 1
    assert capsys.readouterr().out == ""
