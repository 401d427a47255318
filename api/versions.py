"""API versions: dates, chosen per request with `X-API-Version` and echoed back."""

from __future__ import annotations

# Oldest first; the newest is the default when a request names none.
API_VERSIONS = ("2026-11-22",)
LATEST_API_VERSION = API_VERSIONS[-1]
