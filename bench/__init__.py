"""`make bench`: what a request, a cold start and a zip cost, as ratios to a reference.

Every figure is measured in one run against a reference measured beside it (interleaved
rounds, medians and p95), on a stack of its own: Postgres behind PgBouncer in transaction
mode with SCRAM and a pool of 5 server connections. It lives outside tests/ so that a copy
of the starter can drop it; run it with `python -m bench` (see `--help`). The report goes to
`.local/bench/` as Markdown and JSON.
"""
