"""The OpenAPI schema and its viewers (Swagger UI, ReDoc), behind a read key like
every route but /health and /ready: the schema maps the whole API surface.

FastAPI's own open routes are switched off (api/app.py); these serve the same.
A browser sends no key by itself: fetch the schema with the key header instead
(README, "HTTP API").
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from mediamill.api.auth import require_read

OPENAPI_PATH = "/openapi.json"
router = APIRouter(include_in_schema=False, dependencies=[Depends(require_read)])


def _schema_url(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") + OPENAPI_PATH


@router.get(OPENAPI_PATH)
async def openapi_schema(request: Request) -> JSONResponse:
    """The OpenAPI schema (built once, then cached by the app)."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the schema."""
    return get_swagger_ui_html(
        openapi_url=_schema_url(request), title=f"{request.app.title} - Swagger UI"
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the schema."""
    return get_redoc_html(openapi_url=_schema_url(request), title=f"{request.app.title} - ReDoc")
