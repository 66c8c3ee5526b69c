"""The items API: FastAPI wrapped by Mangum, behind the shared Lambda boundary."""

from __future__ import annotations

from fastapi import FastAPI
from mangum import Mangum

from functions.items.routes import router
from shared._boundary import lambda_boundary
from shared._fastapi_app import install_error_handlers

# API Gateway only routes what serverless.yml declares, so the docs pages could not be reached.
app = FastAPI(title="Items API", openapi_url=None, docs_url=None, redoc_url=None)
app.include_router(router)
install_error_handlers(app)

# lifespan="off": Mangum would otherwise run the ASGI lifespan on every invocation.
handler = lambda_boundary(Mangum(app, lifespan="off"))
