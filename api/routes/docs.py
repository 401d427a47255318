"""The OpenAPI schema and its viewers (Swagger UI, ReDoc): public by default, as a
published API's reference is, so a newcomer can read it before holding a key; with
`MEDIAMILL_PUBLIC_DOCS=false` behind a read key like every route but /health and
/ready. Every other route needs a key either way; Swagger UI's Authorize button takes
one as `X-API-Key: <clientId>.<token>` (the schema declares it).

FastAPI's own open routes are switched off (api/app.py); these serve the same.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from mediamill.api.auth import authenticate, require_read

OPENAPI_PATH = "/openapi.json"
API_KEY_SCHEME = "ApiKey"


async def _docs_access(request: Request) -> None:
    """Open unless the app was made with `public_docs` off; then a read or admin key (a
    publishable playback key is for the playback routes only)."""
    if not request.app.state.public_docs:
        await require_read(await authenticate(request))


router = APIRouter(include_in_schema=False, dependencies=[Depends(_docs_access)])


def install_openapi(app: FastAPI, *, public: bool) -> None:
    """Build the schema with the API key scheme every route but /health and /ready
    requires, so Swagger UI's Authorize button sends it."""
    app.state.public_docs = public

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            schema.setdefault("components", {})["securitySchemes"] = {
                API_KEY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "`<clientId>.<token>` of a key from `mediamill keys create`",
                }
            }
            for path, operations in schema.get("paths", {}).items():
                if path in ("/health", "/ready"):
                    continue
                for operation in operations.values():
                    operation.setdefault("security", [{API_KEY_SCHEME: []}])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


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
