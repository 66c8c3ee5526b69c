"""The items API: FastAPI wrapped by Mangum, with JSON errors and JSON logs."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from fastapi import FastAPI
from mangum import Mangum
from mangum.types import LambdaContext, LambdaEvent

from functions.items.routes import router
from shared.api import install_error_handlers
from shared.deadline import deadline_for
from shared.logs import logger

# API Gateway only routes what serverless.yml declares, so the docs pages could not be reached.
app = FastAPI(title="Items API", openapi_url=None, docs_url=None, redoc_url=None)
app.include_router(router)
install_error_handlers(app)

# lifespan="off": Mangum would otherwise run the ASGI lifespan on every invocation.
asgi_handler = Mangum(app, lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point."""
    with deadline_for(context):
        return asgi_handler(event, context)
