"""The functions under `serverless offline` log in to the pooler over TLS, as deployed ones do.

PgBouncer's log says how each client logged in (`login attempt: ... tls=TLSv1.3/...`, or
`tls=no`); the functions got the stack's `verify-full` URL, and PgBouncer refuses plain clients.
"""

from __future__ import annotations

import httpx

from infra.local_stack import LocalStack


def test_functions_log_in_to_the_pooler_over_tls(api: httpx.Client, database: LocalStack) -> None:
    logged_before = database.pgbouncer_log.stat().st_size

    response = api.get("/health")

    assert response.json() == {"status": "ok", "database": "reachable"}
    with database.pgbouncer_log.open("rb") as log:
        log.seek(logged_before)
        lines = log.read().decode(errors="replace").splitlines()
    logins = [line for line in lines if "login attempt:" in line]
    assert logins
    assert all(" tls=TLSv1.3/" in line for line in logins), logins
