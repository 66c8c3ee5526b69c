"""Supabase Auth's token side, locally: a signing key, its JWKS over HTTP, signed tokens.

    python -m infra.local_auth token [--user UUID] [--role authenticated|service_role|anon]
    python -m infra.local_auth token --role service_role \
        --supabase-url https://<ref>.supabase.co --key-file signing-key.json

Unless SUPABASE_URL names a project (then `make dev` verifies that project's tokens), `make
dev` serves the JWKS at Supabase's path, http://127.0.0.1:54421/auth/v1/.well-known/jwks.json
(AUTH_PORT moves it; not the CLI's 54321, so `supabase start` can run beside it), and gives the
functions SUPABASE_URL=http://127.0.0.1:54421, so they fetch and verify exactly as deployed.
`make token` prints an access token shaped like Supabase's, signed with the same key: ES256,
Supabase's default for asymmetric signing keys. The key is generated once into
.local/auth/signing-key.json (ignored by git) and only ever signs local tokens; while
SUPABASE_URL names a project, `make token` refuses, since that project would refuse the token.

With `--key-file` (a private JWK from `supabase gen signing-key --algorithm ES256`, imported
into the project as a standby key, so that its JWKS lists it) and `--supabase-url`, the same
command mints a token for a deployed project, e.g. a short-lived service_role token for
`/connections`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from infra import PROJECT_ROOT
from shared._settings import Settings, env_file

__all__ = [
    "DEFAULT_USER_ID",
    "JWKS_PATH",
    "KEY_FILE",
    "JwksServer",
    "SigningKey",
    "access_token_claims",
    "configured_supabase_url",
    "local_supabase_url",
]

KEY_FILE = PROJECT_ROOT / ".local" / "auth" / "signing-key.json"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
DEFAULT_AUTH_PORT = 54421
"""Beside the Supabase CLI's ports (54320-54329), not on its API port."""
DEFAULT_USER_ID = "00000000-0000-4000-8000-00000000000a"
"""`make token`'s user when USER is not given, so that successive calls act as one user."""

ANON_ROLE = "anon"
ROLES = ("authenticated", "service_role", ANON_ROLE)

TOKEN_LIFETIME_S = 3600
"""Supabase's default access token lifetime."""


def local_supabase_url() -> str:
    """The local SUPABASE_URL: DEFAULT_AUTH_PORT, or AUTH_PORT."""
    return f"http://127.0.0.1:{int(os.environ.get('AUTH_PORT', DEFAULT_AUTH_PORT))}"


def configured_supabase_url() -> str | None:
    """SUPABASE_URL from the environment or `.env`, as the functions read it; None if unset.

    Read afresh, not through the functions' cached settings: a command reads it once anyway.
    """
    return Settings(_env_file=env_file()).supabase_url or None


@dataclass(frozen=True)
class SigningKey:
    """An ES256 private key and its key id, as `supabase gen signing-key` makes them."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        """A new P-256 key."""
        return cls(ec.generate_private_key(ec.SECP256R1()), kid or str(uuid.uuid4()))

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """The key stored at `path` as a private JWK with its `kid`."""
        jwk = json.loads(path.read_text())
        private_key = ECAlgorithm.from_jwk(jwk)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or "kid" not in jwk:
            raise ValueError(f"{path} holds no private EC key with a kid")
        return cls(private_key, jwk["kid"])

    @classmethod
    def load_or_create(cls, path: Path | None = None) -> SigningKey:
        """The key stored at `path` (KEY_FILE: a private JWK), generated and stored on first use."""
        path = path or KEY_FILE
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        jwk = ECAlgorithm.to_jwk(key.private_key, as_dict=True) | {"kid": key.kid, "alg": "ES256"}
        path.touch(mode=0o600)
        path.write_text(json.dumps(jwk, indent=2))
        return key

    def public_jwk(self) -> dict[str, Any]:
        """The public half as Supabase's JWKS lists it."""
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return jwk | {"kid": self.kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"]}

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """A JWT of these claims signed with this key, `kid` in its header."""
        return jwt.encode(
            dict(claims),
            self.private_key,
            algorithm="ES256",
            headers={"kid": self.kid, **(headers or {})},
        )


def access_token_claims(
    issuer: str,
    user_id: str,
    role: str = "authenticated",
    *,
    now: float | None = None,
    lifetime_s: int = TOKEN_LIFETIME_S,
) -> dict[str, Any]:
    """The claims of a Supabase Auth access token for a user signed in with a password; for
    `anon`, a signed-out caller's: no user, so no `sub`, email or session (`user_id` unused)."""
    issued_at = int(time.time() if now is None else now)
    token: dict[str, Any] = {
        "iss": issuer,
        "aud": "authenticated",
        "exp": issued_at + lifetime_s,
        "iat": issued_at,
        "role": role,
    }
    if role == ANON_ROLE:
        return token
    return token | {
        "sub": user_id,
        "email": f"user-{user_id[:8]}@example.test",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": issued_at}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }


class _JwksHandler(BaseHTTPRequestHandler):
    server: _JwksHttpServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != JWKS_PATH:
            self.send_error(404)
            return
        body = json.dumps(self.server.key_set()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: `make dev` and the tests print their own lines."""


class _JwksHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], key_set: Callable[[], dict[str, Any]]) -> None:
        super().__init__(address, _JwksHandler)
        self.key_set = key_set

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a verifier that gave up waiting) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class JwksServer:
    """A JWKS served over HTTP at Supabase's path, from a thread of this process.

    `key_set` is called for every request, so a caller can rotate keys, count fetches or make
    the endpoint slow. Port 0 picks a free port.
    """

    def __init__(
        self, key_set: Callable[[], dict[str, Any]], port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self._server = _JwksHttpServer((host, port), key_set)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long `close()` may wait for the loop
            name="local-jwks",
            daemon=True,
        )
        self._thread.start()

    @property
    def supabase_url(self) -> str:
        """The SUPABASE_URL whose `/auth/v1/.well-known/jwks.json` this server answers."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    """`token`: print a signed access token for a user, as Supabase Auth would issue it."""
    parser = argparse.ArgumentParser(prog="python -m infra.local_auth", description=__doc__)
    parser.add_argument("command", choices=["token"])
    parser.add_argument("--user", default="", help=f"the user's id (default {DEFAULT_USER_ID})")
    parser.add_argument("--role", default="authenticated", choices=ROLES)
    parser.add_argument("--supabase-url", help="the project to sign for (default: the local one)")
    parser.add_argument("--key-file", type=Path, help="a private JWK (default: the local key)")
    parser.add_argument("--lifetime", type=int, default=TOKEN_LIFETIME_S, help="in seconds")
    args = parser.parse_args(argv)
    if args.user and args.role == ANON_ROLE:
        sys.stderr.write("an anon token acts for no user: leave USER out\n")
        return 1
    try:
        user_id = str(uuid.UUID(args.user or DEFAULT_USER_ID))
    except ValueError:
        sys.stderr.write(f"USER must be a UUID, like {DEFAULT_USER_ID}\n")
        return 1
    project = configured_supabase_url()
    if not args.supabase_url and project and project.rstrip("/") != local_supabase_url():
        sys.stderr.write(
            f"SUPABASE_URL is set ({project}), so `make dev` accepts only that project's "
            "tokens, not the local key's: sign in through that project, or unset SUPABASE_URL "
            "(environment and .env) to use the local key\n"
        )
        return 1
    try:
        key = SigningKey.load(args.key_file) if args.key_file else SigningKey.load_or_create()
    except (OSError, ValueError, jwt.PyJWTError) as error:
        sys.stderr.write(f"cannot use the signing key: {error}\n")
        return 1
    issuer = f"{(args.supabase_url or local_supabase_url()).rstrip('/')}/auth/v1"
    claims = access_token_claims(issuer, user_id, args.role, lifetime_s=args.lifetime)
    sys.stdout.write(key.sign(claims) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
