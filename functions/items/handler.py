"""The items API: its routes, served on Lambda."""

from __future__ import annotations

from functions.items.routes import router
from shared.fastapi import create_app, lambda_handler

app = create_app(router, title="Items API")
handler = lambda_handler(app)
