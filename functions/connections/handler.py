"""Connection monitor as a plain Lambda handler: who holds the database's connections."""

from __future__ import annotations

from functions.connections.report import read_report
from shared.http import plain_handler

# Connection usage by application name and state, against the 40% / 80% guidance.
handler = plain_handler(read_report)
