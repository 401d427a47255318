"""Bodies and query parameters of the Content Automation API (v0): asset retrieval,
metadata, stream URLs, legacy track tokens and legacy assets.

Everything a request carries is validated here into enums, numbers and plain
identifiers before a route acts on it; nothing reaches storage or a worker as a
raw query string.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mediamill.schemas.base import CamelModel, RequestModel
from mediamill.schemas.errors import ArgumentNullOrEmptyError, InvalidRequestError, echo
from mediamill.schemas.media import Asset
from mediamill.schemas.packages import Package
from mediamill.schemas.renditions import (
    AUDIO_BITRATES_BPS,
    AUDIO_FORMATS,
    Rendition,
    RenditionFormat,
    RenditionSpec,
)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_TOKEN_CHARS = 128  # legacy_track_tokens.token / legacy_assets.legacy_track_token
MAX_FILENAME_CHARS = 512
LEGACY_PAGE_MAX = 100  # the reference: "default and maximum to 100"


def asset_id_or_none(text: str) -> str | None:
    """A SHA-256 hex asset id (case folded), or None when `text` cannot be one."""
    folded = text.strip().lower()
    return folded if SHA256_HEX.match(folded) else None


def _blank_is_none(value: Any) -> Any:
    """`?bitrate=&channels=` (the reference's example URI) means "not given"."""
    return None if isinstance(value, str) and not value.strip() else value


# ---- retrieval: ?bitrate=&channels=&format=&exact= ------------------------------------------


class RenditionQuery(BaseModel):
    """The retrieval parameters: none of bitrate/channels/format (the original), or all
    three (a rendition). `exact` only qualifies a rendition request."""

    model_config = ConfigDict(extra="ignore")

    bitrate: int | None = None
    channels: int | None = Field(default=None, ge=1, le=2)
    format: RenditionFormat | None = None
    exact: bool = False

    _blanks = field_validator("bitrate", "channels", "format", mode="before")(_blank_is_none)

    @field_validator("exact", mode="before")
    @classmethod
    def _exact_default(cls, value: Any) -> Any:
        return False if _blank_is_none(value) is None else value

    @field_validator("bitrate")
    @classmethod
    def _supported_bitrate(cls, value: int | None) -> int | None:
        if value is not None and value not in AUDIO_BITRATES_BPS:
            allowed = ", ".join(str(b) for b in AUDIO_BITRATES_BPS)
            raise ValueError(f"supported bitrates are {allowed}")
        return value

    @field_validator("format")
    @classmethod
    def _audio_format(cls, value: RenditionFormat | None) -> RenditionFormat | None:
        if value is not None and value not in AUDIO_FORMATS:
            allowed = ", ".join(f.value for f in AUDIO_FORMATS)
            raise ValueError(f"supported formats are {allowed}")
        return value

    @model_validator(mode="after")
    def _all_or_none(self) -> RenditionQuery:
        given = [self.bitrate is not None, self.channels is not None, self.format is not None]
        if any(given) and not all(given):
            raise ValueError("bitrate, channels and format must be given all together, or none")
        return self

    def spec(self) -> RenditionSpec | None:
        """The requested rendition, or None for the original."""
        if self.format is None:
            return None
        return RenditionSpec(format=self.format, bitrate_bps=self.bitrate, channels=self.channels)


class SignedRedirect(CamelModel):
    """The body of a 302 to a signed URL, for clients that do not follow redirects."""

    url: str
    expires_at: datetime


class AssetMetadata(Asset):
    """`GET /v0/assets/{id}/metadata`: the asset with its renditions and packages."""

    renditions: list[Rendition] = Field(default_factory=list)
    packages: list[Package] = Field(default_factory=list)


class StreamUrls(CamelModel):
    """Signed HLS and DASH manifest URLs of an asset's package (EncoraStream's shape,
    camelCase), valid until `expiresAt`."""

    hls_url: str
    dash_url: str
    expires_at: datetime
    package_id: str


# ---- legacy track tokens ---------------------------------------------------------------------


def checked_token(value: str | None, *, what: str = "legacyTrackToken") -> str:
    """A legacy track token, or ArgumentNullOrEmptyError / InvalidRequestError. A token
    names one path segment (`/v0/legacy/tracks/{token}`), so one that no URL can carry
    (`/` or `\\` in it, or `.` / `..`, which clients fold away) is refused when it is
    given, not left to be unreachable later."""
    if value is None or not str(value).strip():
        raise ArgumentNullOrEmptyError(f"{what} cannot be null or empty")
    token = str(value).strip()
    if len(token) > MAX_TOKEN_CHARS or any(ord(c) < 32 for c in token):
        raise InvalidRequestError(f"{what} must be at most {MAX_TOKEN_CHARS} printable characters")
    if "/" in token or "\\" in token or token in {".", ".."}:
        raise InvalidRequestError(
            f"{what} {echo(token)} cannot be addressed by a URL: no '/' or '\\', and not "
            "'.' or '..'"
        )
    return token


class TrackMapping(CamelModel):
    """One legacy track token ↔ original asset link."""

    original_asset_id: str
    legacy_track_token: str


# ---- legacy assets -----------------------------------------------------------------------------


def _checked_legacy_asset_id(value: str | None) -> str | None:
    if value is None:
        return None
    folded = asset_id_or_none(value)
    if folded is None:
        raise ValueError("legacyAssetId must be a SHA-256 in hex (64 characters) or null")
    return folded


class LegacyAsset(CamelModel):
    """A file of the legacy media cache, known by its legacy track token."""

    legacy_track_token: str
    legacy_asset_id: str | None = None
    original_file_name: str | None = None


class LegacyAssetCreate(RequestModel):
    """`POST /v0/legacy/assets`. The token is checked by the route so that a missing one
    is the reference's ArgumentNullOrEmptyError rather than a validation error."""

    # Old clients send tokens as numbers (`"legacyTrackToken": 1032920`).
    model_config = ConfigDict(coerce_numbers_to_str=True)  # merged with CamelModel's

    legacy_track_token: str | None = None
    legacy_asset_id: str | None = None
    original_file_name: str | None = Field(default=None, max_length=MAX_FILENAME_CHARS)

    _asset_id = field_validator("legacy_asset_id")(_checked_legacy_asset_id)


class LegacyAssetUpdate(RequestModel):
    """`PUT /v0/legacy/assets/{compositeKey}`: only the fields present change; null
    clears one. The token is the key and cannot be changed."""

    # Old clients send tokens as numbers (`"legacyTrackToken": 1032920`).
    model_config = ConfigDict(coerce_numbers_to_str=True)  # merged with CamelModel's

    legacy_track_token: str | None = None
    legacy_asset_id: str | None = None
    original_file_name: str | None = Field(default=None, max_length=MAX_FILENAME_CHARS)

    _asset_id = field_validator("legacy_asset_id")(_checked_legacy_asset_id)


def parse_composite_key(composite_key: str) -> str:
    """`trackToken:{value}` → the token. Other keys are a 400; an empty value is the
    reference's ArgumentNullOrEmptyError."""
    name, sep, value = composite_key.partition(":")
    if not sep or name != "trackToken":
        raise InvalidRequestError(
            f"unsupported composite key {echo(composite_key)}: use trackToken:{{value}}"
        )
    return checked_token(value)


# ---- legacy asset listing: mongoose-middleware filters -----------------------------------------


class LegacyField(StrEnum):
    """The legacy asset fields a filter or sort may name (their JSON names)."""

    LEGACY_TRACK_TOKEN = "legacyTrackToken"
    LEGACY_ASSET_ID = "legacyAssetId"
    ORIGINAL_FILE_NAME = "originalFileName"


class MatchOp(StrEnum):
    """mongoose-middleware's string matches, all case-insensitive."""

    EXACT = "exact"
    CONTAINS = "contains"
    STARTS_WITH = "startsWith"
    ENDS_WITH = "endsWith"


class Condition(BaseModel):
    """`field` matches any of `values` by `op`."""

    field: LegacyField
    op: MatchOp
    values: list[str]


class Keyword(BaseModel):
    """Any of `terms` appears in any of `fields`."""

    fields: list[LegacyField]
    terms: list[str]


class LegacyFilters(BaseModel):
    """Parsed filters: every mandatory condition holds, at least one optional condition
    holds (when there are any), and the keyword search matches (when given)."""

    mandatory: list[Condition] = Field(default_factory=list)
    optional: list[Condition] = Field(default_factory=list)
    keyword: Keyword | None = None
    echo: dict[str, Any] = Field(default_factory=dict)  # the filters as given, for `options`


_BRACKETS = re.compile(r"\[([^\]]*)\]")
# Bounds on a filter object, far above what mongoose-middleware clients send
# (`{"mandatory": {"exact": {"legacyTrackToken": [...]}}}` is 4 deep): deeper
# nesting would exhaust the parser's stack, more values the database's expression
# limits (SQLite: "Expression tree is too large"), each a 5xx for a bad request.
MAX_FILTER_DEPTH = 6
MAX_FILTER_VALUES = 100
MAX_FILTER_CHARS = 16_384


def _json_depth(text: str) -> int:
    """How deep `[` and `{` nest in JSON text, strings skipped (without parsing it)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _nest(target: dict[str, Any], path: list[str], value: str) -> None:
    """Place `value` at `path`, qs-style: `a[b][c]=v` sets, `a[b][]=v` appends, and a
    repeated key becomes a list."""
    *parents, leaf = path
    appending = leaf == ""
    if appending:
        if not parents:
            raise InvalidRequestError("malformed filter parameter: empty name")
        *parents, leaf = parents
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise InvalidRequestError(f"filters: conflicting values for {echo(part)}")
    existing = target.get(leaf)
    if existing is None:
        target[leaf] = [value] if appending else value
    elif isinstance(existing, list):
        existing.append(value)
    elif isinstance(existing, str):
        target[leaf] = [existing, value]
    else:
        raise InvalidRequestError(f"filters: conflicting values for {echo(leaf)}")


def filters_from_query(filters_param: str | None, items: list[tuple[str, str]]) -> dict[str, Any]:
    """The raw filters object: `?filters=` as JSON, and/or qs-style bracket parameters
    (`filters[mandatory][exact][legacyTrackToken]=1032904`), as Express clients send."""
    raw: dict[str, Any] = {}
    if filters_param is not None and filters_param.strip():
        if len(filters_param) > MAX_FILTER_CHARS:
            raise InvalidRequestError(f"filters is longer than {MAX_FILTER_CHARS} characters")
        if _json_depth(filters_param) > MAX_FILTER_DEPTH:
            raise InvalidRequestError(f"filters nests deeper than {MAX_FILTER_DEPTH} levels")
        try:
            parsed = json.loads(filters_param)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"filters is not valid JSON: {exc.msg}") from exc
        if not isinstance(parsed, dict):
            raise InvalidRequestError("filters must be a JSON object")
        raw = parsed
    for key, value in items:
        if not key.startswith("filters["):
            continue
        rest = key[len("filters") :]
        path = _BRACKETS.findall(rest)
        if not path or "".join(f"[{p}]" for p in path) != rest:
            raise InvalidRequestError(f"malformed filter parameter {echo(key)}")
        if len(path) > MAX_FILTER_DEPTH:
            raise InvalidRequestError(
                f"filter parameters nest deeper than {MAX_FILTER_DEPTH} levels"
            )
        _nest(raw, path, value)
    return raw


def _strings(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str | int | float) for v in items):
        raise InvalidRequestError(f"filters.{where}: expected a string or a list of strings")
    return [str(v) for v in items]


def _conditions(spec: Any, where: str) -> list[Condition]:
    if not isinstance(spec, dict):
        raise InvalidRequestError(f"filters.{where} must be an object")
    out = []
    for op_name, fields in spec.items():
        try:
            op = MatchOp(op_name)
        except ValueError:
            allowed = ", ".join(m.value for m in MatchOp)
            raise InvalidRequestError(
                f"filters.{where}: unsupported match {echo(op_name)} (supported: {allowed})"
            ) from None
        if not isinstance(fields, dict):
            raise InvalidRequestError(f"filters.{where}.{op_name} must be an object")
        for name, value in fields.items():
            out.append(
                Condition(
                    field=_legacy_field(name, f"{where}.{op_name}"),
                    op=op,
                    values=_strings(value, f"{where}.{op_name}.{name}"),
                )
            )
    return out


def _legacy_field(name: str, where: str) -> LegacyField:
    try:
        return LegacyField(name)
    except ValueError:
        allowed = ", ".join(f.value for f in LegacyField)
        raise InvalidRequestError(
            f"filters.{where}: unknown field {echo(name)} (fields: {allowed})"
        ) from None


def _keyword_terms(term: str) -> list[str]:
    """Whitespace-separated terms; a "quoted phrase" is one term."""
    terms = [a or b for a, b in re.findall(r'"([^"]+)"|(\S+)', term)]
    return [t for t in terms if t]


def parse_legacy_filters(raw: dict[str, Any]) -> LegacyFilters:
    """mongoose-middleware's filter object → typed conditions; anything else is a 400."""
    unknown = set(raw) - {"mandatory", "optional", "keyword"}
    if unknown:
        raise InvalidRequestError(
            f"unsupported filters {sorted(unknown)} (supported: mandatory, optional, keyword)"
        )
    keyword = None
    if "keyword" in raw:
        spec = raw["keyword"]
        if not isinstance(spec, dict) or not isinstance(spec.get("term"), str):
            raise InvalidRequestError("filters.keyword needs a string term (and optional fields)")
        names = spec.get("fields", [f.value for f in LegacyField])
        fields = [_legacy_field(n, "keyword.fields") for n in _strings(names, "keyword.fields")]
        keyword = Keyword(fields=fields, terms=_keyword_terms(spec["term"]))
    filters = LegacyFilters(
        mandatory=_conditions(raw.get("mandatory", {}), "mandatory"),
        optional=_conditions(raw.get("optional", {}), "optional"),
        keyword=keyword,
        echo=raw,
    )
    values = sum(len(c.values) for c in (*filters.mandatory, *filters.optional))
    if keyword is not None:
        values += len(keyword.terms) * len(keyword.fields)
    if values > MAX_FILTER_VALUES:
        raise InvalidRequestError(
            f"filters compare {values} values (keyword terms count once per field); "
            f"at most {MAX_FILTER_VALUES}"
        )
    return filters


class SortKey(BaseModel):
    field: LegacyField
    descending: bool = False


def parse_sort(text: str | None) -> list[SortKey]:
    """`-legacyTrackToken,originalFileName` (mongoose-middleware's `-field` for descending)."""
    keys = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        descending = part.startswith("-")
        keys.append(SortKey(field=_legacy_field(part.lstrip("-+"), "sort"), descending=descending))
    return keys


class LegacyAssetPage(BaseModel):
    """`GET /v0/legacy/assets`: mongoose-middleware's page (`options` echoed back)."""

    options: dict[str, Any]
    results: list[dict[str, Any]]
    total: int


def whole_number(
    text: str | None, name: str, default: int, maximum: int, *, cap: bool = False
) -> int:
    """`?count=` and `?start=`: blank means the default; anything else a whole number
    up to `maximum`, beyond which it is capped (`cap`) or refused. Checked before it
    reaches the database, whose integers overflow far below what Python parses."""
    if text is None or not text.strip():
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequestError(f"{name} must be a whole number, not {text[:40]!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) <= len(str(maximum)) and int(digits) <= maximum:
        return int(digits)
    if cap:
        return maximum
    raise InvalidRequestError(f"{name} must be at most {maximum}, not {text[:40]!r}")
