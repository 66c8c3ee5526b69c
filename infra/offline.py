"""Run `serverless offline` (osls + serverless-offline) for `make dev` and the e2e tests.

The functions run in the project's virtualenv (serverless-offline picks `python3` from
VIRTUAL_ENV) and read DATABASE_URL and SUPABASE_URL (where they fetch the JWKS that verifies
access tokens) from the environment it inherits, so neither has to be written into
serverless.yml.

CORS: serverless offline with no CORS configured lets every origin call the API, while the
deployed API lets none call it until the stage names its frontends. So it always runs with the
deployed policy (serverless.yml's `corsOrigins` param) and the origins in CORS_ORIGINS, by
default a Vite dev server's: a page served from anywhere else fails here as it would deployed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import IO

from infra import PROJECT_ROOT

SERVERLESS = PROJECT_ROOT / "node_modules" / ".bin" / "serverless"
VENV = PROJECT_ROOT / ".venv"
STOP_TIMEOUT_S = 10.0
# Vite's dev server (React, Vue, Svelte templates); port 3000, other tools' default, is the API's.
DEFAULT_CORS_ORIGINS = "http://localhost:5173"


class CorsOriginsError(ValueError):
    """CORS_ORIGINS names no origin."""


def local_cors_origins() -> str:
    """The origins whose pages may call the local API: CORS_ORIGINS (comma separated) or Vite's.

    An empty list is refused rather than served: serverless offline would read it as "no CORS
    configured" and let every origin in.
    """
    origins = os.environ.get("CORS_ORIGINS", DEFAULT_CORS_ORIGINS)
    if not origins.strip(", "):
        raise CorsOriginsError(
            "CORS_ORIGINS is empty: name the origin of your frontend's dev server, for example "
            f"CORS_ORIGINS={DEFAULT_CORS_ORIGINS} (the default when it is unset)"
        )
    return origins


def offline_environment(
    database_url: str, supabase_url: str, http_port: int, lambda_port: int
) -> dict[str, str]:
    """The environment the functions see: ours, plus the database and Supabase URLs and the venv."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SUPABASE_URL": supabase_url,
        "HTTP_PORT": str(http_port),
        "LAMBDA_PORT": str(lambda_port),
        "OFFLINE_FROM_SOURCE": "",  # run the source, not the zips (see serverless.yml)
        "VIRTUAL_ENV": str(VENV),
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def start_offline(
    database_url: str,
    supabase_url: str,
    http_port: int,
    lambda_port: int,
    output: IO[bytes] | None = None,
    cors_origins: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start serverless offline in its own process group, so it can be stopped as a whole.

    Its log (a line per request naming the function invoked) goes to `output` when given.
    Browsers may call it from `cors_origins` (comma separated), by default `local_cors_origins()`.
    """
    if not SERVERLESS.exists():
        raise FileNotFoundError(f"{SERVERLESS} is missing: run `npm ci` (or `make install`)")
    origins = local_cors_origins() if cors_origins is None else cors_origins
    return subprocess.Popen(
        [
            str(SERVERLESS),
            *("offline", "start", "--stage", "dev", f"--param=corsOrigins={origins}"),
        ],
        cwd=PROJECT_ROOT,
        env=offline_environment(database_url, supabase_url, http_port, lambda_port),
        start_new_session=True,
        stdout=output,
        stderr=None if output is None else subprocess.STDOUT,
    )


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll `url` until it answers (any HTTP status), the process dies, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serverless offline exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error status still means it is serving
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"serverless offline did not answer {url} within {timeout_s:.0f} s")


def stop_offline(process: subprocess.Popen[bytes]) -> None:
    """SIGINT the whole group (after SIGTERM its Python children linger), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    # Handler processes serverless-offline started may outlive it in the same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
