"""Base model: camelCase JSON field names everywhere, snake_case with units in Python."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Serialises to camelCase (`by_alias=True`) and accepts either spelling on input."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=False)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def utcnow() -> datetime:
    """Timezone-aware now in UTC; every timestamp MediaMill writes comes from here."""
    return datetime.now(UTC)
