"""The one exception tree of MediaMill.

Every failure that a job, the CLI or the API reports has a class here, named as
the Content Automation API names it where it has a name. `permanent` tells the
queue whether retrying can help: bad media never gets better, a storage hiccup
may. HTTP status mapping lives only in `api/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mediamill.config.settings import ConfigError


class MediaMillError(Exception):
    """Base of every MediaMill error. `context` carries the facts a reader needs."""

    permanent: bool = True

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    @property
    def name(self) -> str:
        return type(self).__name__

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "message": self.message}


class MediaError(MediaMillError):
    """The media itself is the problem; retrying cannot help."""


class CorruptMediaError(MediaError):
    """The file claims a known format but cannot be decoded to its end (empty, truncated)."""


class UnsupportedMediaError(MediaError):
    """Not a format we handle: unknown container, no audio or video stream, unknown codec."""


class WorkerCrashedError(MediaError):
    """The process decoding the media died by a signal (SIGSEGV, SIGABRT, out of memory)
    in the stage `context['stage']`, again on a second try in a fresh process: the bytes
    are taken to be what kills the decoder, so retrying cannot help. Also: the worker
    running the stage was lost more often than `MEDIAMILL_MAX_LOST_RUNS` allows."""


class LowQualityError(MediaError):
    """The original cannot support the requested quality and `exact` was asked for."""


class LimitExceededError(MediaMillError):
    """The media is over one of the operator's limits (`MEDIAMILL_MAX_*` settings).
    Permanent for this job, but not a verdict on the bytes: the asset is not
    condemned, so the same file goes through once the limit is raised."""


class FileTooLargeError(LimitExceededError):
    """More bytes than `MEDIAMILL_UPLOAD_MAX_BYTES` allows."""


class DurationTooLongError(LimitExceededError):
    """Longer (declared or decoded) than `MEDIAMILL_MAX_DURATION_S` allows."""


class DimensionsTooLargeError(LimitExceededError):
    """Video wider or taller than `MEDIAMILL_MAX_VIDEO_WIDTH_PX` / `_HEIGHT_PX`."""


class DecompressionBombError(LimitExceededError):
    """Far more media than the file's size can honestly hold: its duration would mean
    fewer than `MEDIAMILL_MIN_MEDIA_BITRATE_BPS` bits of file per second."""


class ModelNotFoundError(MediaMillError):
    """The asset, job or object asked for does not exist."""


class ModelNotReadyError(MediaMillError):
    """The thing exists but is still being made."""

    permanent = False


class ModelInvalidError(MediaMillError):
    """The thing exists but cannot be served (for example a URL cannot be signed)."""


class InvalidRequestError(MediaMillError):
    """A request's parameters are missing, inconsistent or out of range."""


class ArgumentNullOrEmptyError(InvalidRequestError):
    """A required argument is missing or empty (the Content Automation API's name)."""


class AuthenticationError(MediaMillError):
    """No API key, or one that does not match a live key."""


class PermissionDeniedError(MediaMillError):
    """The API key is valid but its scope does not allow this."""


class UrlExpiredError(PermissionDeniedError):
    """A signed delivery URL whose token was right but whose expiry has passed."""


class ConflictError(MediaMillError):
    """The request conflicts with the resource's state (a completed upload cannot be
    cancelled; an idempotency key reused with another request body)."""


class PayloadTooLargeError(InvalidRequestError):
    """A request body carrying more items than the service takes at once (a bucket
    notification with more records than `MEDIAMILL_BUCKET_EVENT_MAX_RECORDS`)."""


class SizeMismatchError(InvalidRequestError):
    """The bytes to ingest are not the size declared for them (an upload's object
    changed after `complete` checked it). Retrying cannot help: upload again."""


class UnsupportedRenditionError(InvalidRequestError):
    """A rendition that no encoder can deliver as asked (format, bitrate, channels,
    sample rate together). Refused before any work starts."""


class RefusedUrlError(InvalidRequestError):
    """A URL MediaMill will not reach: not https where https is required, a host that
    does not resolve, or an address that is not public (loopback, private, link-local)."""


class SymlinkRefusedError(InvalidRequestError):
    """A local-store key whose path is, or passes through, a symbolic link. The local
    store never follows links, so a link planted in it cannot point a job (or the edge)
    at a file outside the store, such as the signing secret."""


class TrackingSessionInvalidError(InvalidRequestError):
    """No tracking session in the cookie or the header, or one whose signature does
    not check out (forged or edited), or one that was ended."""


class TrackingSessionExpiredError(InvalidRequestError):
    """A tracking session token whose signature is right but whose lifetime is over."""


class PlaybackSessionEndedError(ConflictError):
    """A heartbeat or events for a playback session that ended (by DELETE, or by
    going `MEDIAMILL_PLAYBACK_SESSION_TTL_S` without a heartbeat): start a new one."""


class ConcurrentStreamsExceededError(ConflictError):
    """The device (or the user) already has `MEDIAMILL_MAX_CONCURRENT_STREAMS` active
    playback sessions; end one first."""


class UnreadableLogLineError(InvalidRequestError):
    """A line of an edge access log that is not one of the edge's JSON objects (counted
    and skipped by the ingest)."""


class RateLimitedError(MediaMillError):
    """A `playback` key sent more requests from one address than
    `MEDIAMILL_PLAYBACK_RATE_PER_S` allows; `context['retry_after_s']` says when to retry."""

    permanent = False


class TransientError(MediaMillError):
    """A failure that may pass: network, storage or database hiccups. Retried with backoff."""

    permanent = False


class StorageError(TransientError):
    """The blob store failed to read or write."""


class BufferUnavailableError(TransientError):
    """The playback buffer (Redis) cannot be reached: a heartbeat or events were not
    taken; send them again shortly."""


class AnalyticsBusyError(TransientError):
    """The views update held its lock for longer than an erasure waits: try again."""


class BlobNotFoundError(ModelNotFoundError):
    """No object under that key."""


class ProcessingTimeoutError(MediaMillError):
    """A stage ran past its wall-clock limit."""


class FFmpegError(MediaMillError):
    """An ffmpeg run failed; `context['stderr']` holds the tail of its output."""


ECHO_CHARS = 80


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as an error message quotes input: its repr, cut to `limit` characters,
    so a 60 KB id or key is never sent back whole."""
    quoted = repr(value)
    return quoted if len(quoted) <= limit else f"{quoted[:limit]}..."


def _cut(text: str, limit: int = ECHO_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def describe_validation(errors: Iterable[Mapping[str, Any]], *, drop: tuple[str, ...] = ()) -> str:
    """pydantic's `errors()` as one line: `field.path: message; ...` (`drop`: location
    parts left out, such as FastAPI's `body`). A location part is input too (the name
    of an unknown field): each is cut to 80 characters, and at most 10 errors are told."""
    listed = list(errors)
    told = "; ".join(
        f"{'.'.join(_cut(str(p)) for p in err.get('loc', ()) if p not in drop) or 'body'}: "
        f"{_cut(str(err.get('msg', 'invalid')), 200)}"
        for err in listed[:10]
    )
    return told if len(listed) <= 10 else f"{told}; and {len(listed) - 10} more"


def error_from_name(name: str, message: str) -> MediaMillError:
    """Rebuild an error recorded by name (for example on a failed job row)."""
    cls = _BY_NAME.get(name, MediaMillError)
    return cls(message)


def _subclasses(cls: type[MediaMillError]) -> list[type[MediaMillError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


_BY_NAME = {c.__name__: c for c in _subclasses(MediaMillError)}

__all__ = [
    "ArgumentNullOrEmptyError",
    "AuthenticationError",
    "BlobNotFoundError",
    "BufferUnavailableError",
    "ConcurrentStreamsExceededError",
    "ConfigError",
    "ConflictError",
    "CorruptMediaError",
    "DecompressionBombError",
    "DimensionsTooLargeError",
    "DurationTooLongError",
    "FFmpegError",
    "FileTooLargeError",
    "InvalidRequestError",
    "LimitExceededError",
    "LowQualityError",
    "MediaError",
    "MediaMillError",
    "ModelInvalidError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PlaybackSessionEndedError",
    "ProcessingTimeoutError",
    "RateLimitedError",
    "RefusedUrlError",
    "SizeMismatchError",
    "StorageError",
    "SymlinkRefusedError",
    "TrackingSessionExpiredError",
    "TrackingSessionInvalidError",
    "TransientError",
    "UnreadableLogLineError",
    "UnsupportedMediaError",
    "UnsupportedRenditionError",
    "WorkerCrashedError",
    "describe_validation",
    "echo",
    "error_from_name",
]
