"""The audit log (admin keys only): `GET /v0/audit-logs` newest first, filtered by
actor, action prefix, resource and time, and `GET /v0/audit-logs/{id}`. No route
changes or deletes an entry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from mediamill.api.deps import AdminKey, SessionDep
from mediamill.schemas.audit import AuditLogEntry
from mediamill.schemas.base import CamelModel
from mediamill.schemas.errors import InvalidRequestError
from mediamill.storage import audit

router = APIRouter(prefix="/v0/audit-logs", tags=["audit log"])

_Text = Annotated[str | None, Query(min_length=1, max_length=100)]


class AuditLogPage(CamelModel):
    data: list[AuditLogEntry]
    next_cursor: str | None


def _aware(value: datetime | None, name: str) -> datetime | None:
    """`value` in UTC; a named 400 without an offset or outside the years 1970..2200."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequestError(f"{name} needs a time zone offset (such as Z or +01:00)")
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not 1970 <= utc.year <= 2200:
        raise InvalidRequestError(f"{name} must fall between the years 1970 and 2200")
    return utc


@router.get("", response_model=AuditLogPage)
def list_audit_logs(
    s: SessionDep,
    _: AdminKey,
    actor_id: Annotated[str | None, Query(alias="actorId", min_length=1, max_length=64)] = None,
    action: Annotated[
        str | None, Query(min_length=1, max_length=100, description="a prefix: `webhook.`")
    ] = None,
    resource_type: Annotated[str | None, Query(alias="resourceType", max_length=100)] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId", max_length=200)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> JSONResponse:
    """Entries newest first; `nextCursor` fetches the next page, null on the last."""
    entries, next_cursor = audit.list_entries(
        s,
        actor_id=actor_id,
        action=action,
        resource_type=resource_type or None,
        resource_id=resource_id or None,
        start=_aware(start, "from"),
        end=_aware(end, "to"),
        limit=limit,
        cursor=cursor,
    )
    return JSONResponse(AuditLogPage(data=entries, next_cursor=next_cursor).to_json_dict())


@router.get("/{entry_id}", response_model=AuditLogEntry)
def get_audit_log(s: SessionDep, entry_id: str, _: AdminKey) -> JSONResponse:
    """One entry; 404 if unknown."""
    return JSONResponse(audit.get_entry(s, entry_id).to_json_dict())
