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


MAX_NESTING = 64


def storable_text_problem(value: Any) -> str | None:
    """Why `value` (a string, or a list/dict of them, keys included) cannot be stored as
    text, or None. JSON may spell a lone UTF-16 surrogate (`"\\ud800"`) or a NUL
    (`"\\u0000"`), but the first is not text and PostgreSQL refuses the second. Walked
    with a stack, not recursion: nesting past MAX_NESTING is itself the problem (a
    kilobyte of `[` must be a 400, not a RecursionError)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "strings must not contain NUL (\\u0000) characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return (
                    "strings must be valid Unicode: a lone surrogate (such as \\ud800) is "
                    "not text"
                )
            continue
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if depth >= MAX_NESTING:
            return f"values nest deeper than {MAX_NESTING} levels"
        stack.extend((child, depth + 1) for child in reversed(children))
    return None


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
