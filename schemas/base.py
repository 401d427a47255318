"""Base model: camelCase JSON field names everywhere, snake_case with units in Python."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Serialises to camelCase (`by_alias=True`) and accepts either spelling on input."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=False)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def storable_text_problem(value: Any) -> str | None:
    """Why `value` (a string, or a list/dict of them, keys included) cannot be stored as
    text, or None. JSON may spell a lone UTF-16 surrogate (`"\\ud800"`) or a NUL
    (`"\\u0000"`), but the first is not text and PostgreSQL refuses the second."""
    if isinstance(value, str):
        if "\x00" in value:
            return "strings must not contain NUL (\\u0000) characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "strings must be valid Unicode: a lone surrogate (such as \\ud800) is not text"
        return None
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return None
    return next((p for p in map(storable_text_problem, items) if p is not None), None)


class RequestModel(CamelModel):
    """A request body: a CamelModel that refuses text no database can store (lone
    surrogates, NUL) anywhere in its input, nested values and keys too, before any
    field is validated, so it is a 400 instead of a crash in the DB driver."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if (problem := storable_text_problem(data)) is not None:
            raise ValueError(problem)
        return data


def utcnow() -> datetime:
    """Timezone-aware now in UTC; every timestamp MediaMill writes comes from here."""
    return datetime.now(UTC)
