"""The one `Settings` object (env prefix `MEDIAMILL_`).

With nothing set, MediaMill runs embedded in one process: a local directory
store, SQLite and dramatiq's `StubBroker`, all under `data_dir`. Setting any of
`broker_url`, `database_url` or `storage_url` makes it a distributed
deployment, where secrets must be given explicitly (each process must share
them), so none is generated.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SIGNING_SECRET_FILE = "signing-secret"
# Where `mediamill serve` serves signed files and packages (the embedded edge).
EMBEDDED_EDGE_PATH = "/cdn"
# Stages alternate between single-threaded Python (analysis, measuring outputs) and
# multi-threaded ffmpeg runs: with one thread per core a 2-core worker kept 1.48 cores
# busy on a batch of short tracks, with two per core 1.79 (scripts/bench_throughput.py).
THREADS_PER_CORE = 2


class ConfigError(ValueError):
    """A setting is missing or invalid. Raised before any work starts."""


class Settings(BaseSettings):
    """Every knob MediaMill has. Derived values are properties, not fields."""

    model_config = SettingsConfigDict(env_prefix="MEDIAMILL_", extra="ignore")

    data_dir: Path | None = Field(
        default=None,
        description=(
            "Where the embedded default keeps everything (store, SQLite, work files, the "
            "signing secret); unset: the user's data directory (`~/.local/share/mediamill` "
            "on Linux, via platformdirs), the same whichever folder a command runs from."
        ),
    )
    storage_url: str | None = Field(
        default=None,
        description=(
            "Blob store: `file:///abs/path` or `s3://bucket[/prefix]`; unset: `<data dir>/store`."
        ),
    )
    database_url: str | None = Field(
        default=None,
        description="e.g. `postgresql+psycopg://user:pw@host/db`; unset: SQLite in the data dir.",
    )
    broker_url: str | None = Field(
        default=None,
        description="`redis://...` or `amqp://...`; unset: the queue runs in the process.",
    )
    ffmpeg: str | None = Field(
        default=None,
        description="The ffmpeg binary to run; unset: the one of the `imageio-ffmpeg` wheel.",
    )
    signing_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Signs delivery URLs (16+ chars); required with a broker URL, else generated."
        ),
    )

    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 or MinIO endpoint; unset: AWS.",
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 credentials; unset: boto3's usual chain.",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        description="S3 credentials; unset: boto3's usual chain.",
    )
    s3_region: str = Field(
        default="us-east-1",
        description="S3 region.",
    )
    s3_multipart_threshold_bytes: int = Field(
        default=16 * 1024 * 1024, ge=5 * 1024 * 1024,
        description="Objects from this size up are written to S3 in parts.",
    )
    s3_multipart_chunk_bytes: int = Field(
        default=16 * 1024 * 1024, ge=5 * 1024 * 1024,
        description="The size of each part of a multipart S3 write.",
    )

    # Threads per worker process; unset: THREADS_PER_CORE per core the process may run
    # on (its CPU affinity, so a `taskset -c 0` worker gets 2).
    worker_threads: int | None = Field(default=None, ge=1, le=64)
    worker_nice: int = Field(
        default=10, ge=0, le=19,
        description=(
            "How much `mediamill worker` lowers its CPU priority (nice): its batch work "
            "(transcodes, flushes) yields to an API on the same machine, whose heartbeat "
            "p99 it otherwise spoils (docs/performance.md); no effect on a machine of its own."
        ),
    )
    max_retries: int = Field(
        default=5, ge=0,
        description="Retries of a stage after a transient failure (storage, network).",
    )
    retry_min_backoff_ms: int = Field(
        default=2_000, ge=1,
        description="First retry delay; it doubles each time.",
    )
    retry_max_backoff_ms: int = Field(
        default=300_000, ge=1,
        description="Longest retry delay.",
    )
    # Message time limits scale with the media: base + factor x media duration.
    time_limit_base_s: float = Field(default=300.0, gt=0)
    time_limit_per_media_s: float = Field(default=1.0, gt=0)
    # A running job whose row has not been touched for this long is presumed
    # orphaned (its worker died) and may be claimed again.
    job_lease_s: float = Field(default=120.0, gt=0)
    # A job whose worker was lost (its lease lapsed: the process was killed, or died in
    # native code) runs again at most this many times in one stage, then fails with
    # WorkerCrashedError: a file that kills whole workers must not do so for ever.
    max_lost_runs: int = Field(default=2, ge=0)
    # serve, worker, process and listen-bucket check the whole configuration before
    # taking work, waiting up to this long for the database, broker and store.
    startup_wait_s: float = Field(default=30.0, ge=0)
    # Every worker process refreshes a heartbeat row (every quarter of this); /ready
    # fails `workers` when jobs are queued and no worker was seen for this long.
    worker_stale_s: float = Field(default=60.0, gt=0)
    # Tests only: native children die by the signal a file starting with
    # "MEDIAMILL-TEST-CRASH SIGSEGV" names (workers/native_child.py). Never set it in
    # production: such a file would then crash a decoding process on purpose.
    test_crashes: bool = False
    # Redis: a worker process that has not polled Redis for this long is presumed dead,
    # and the messages it had fetched (running or prefetched) go back on the queue at
    # the next sweep. A live worker polls several times a second, so 15 s is a long
    # stall; a wrong verdict only costs skipped duplicates (a job row is claimed by one
    # message), while a long timeout leaves a dead worker's prefetched jobs idle.
    broker_heartbeat_timeout_s: float = Field(default=15.0, gt=0)
    # The sweeper re-enqueues jobs left in `queued` for longer than this.
    requeue_after_s: float = Field(default=300.0, gt=0)
    sweep_interval_s: float = Field(
        default=30.0, gt=0,
        description="How often the sweeper runs.",
    )
    # The sweeper deletes temporary objects of writes that never finished (a killed
    # writer's; never under a key) once this old. A live write's temporary object is
    # written to continuously (local) or copied away within moments of existing (S3).
    store_orphan_age_s: float = Field(default=3600.0, gt=0)

    # Renditions made automatically after analysis, as `format:bitrate:channels` items
    # (bitrate 0 for lossless formats). Audio assets get the audio profile; video
    # assets get the video ladder (`height:video bitrate`, never above the original).
    default_audio_renditions: str = "mp3:128000:2,aac:128000:2,opus:96000:2"
    rendition_true_peak_dbtp: float = Field(
        default=-1.0, ge=-20.0, le=0.0,
        description=(
            "The true-peak ceiling of every lossy rendition without a loudness target of "
            "its own, measured on the encoded file (a limiter only where it is needed)."
        ),
    )
    default_video_ladder: str = Field(
        default="1080:5000000,720:3000000,480:1500000,360:800000,240:400000",
        description="Video renditions made automatically: `height:video bitrate` items.",
    )
    # HLS + DASH packages over one set of CMAF segments. Video assets package their
    # ladder (segments a multiple of the 2 s keyframe interval); audio-only assets
    # package this AAC ladder (`aac:bitrate:channels` items).
    package_segment_s: int = Field(default=4, ge=2, le=10)
    package_audio_ladder: str = "aac:64000:2,aac:128000:2,aac:256000:2"

    # Signed delivery URLs. `nginx`: the secure_link forms of `mediamill edge
    # nginx-conf` under `cdn_base_url`; `cloudfront`: CloudFront signed URLs and
    # cookies (key pair id + RSA private key); `s3`: presigned GETs straight from the
    # store (files only). Packages stay valid for the asset's duration plus a margin.
    signing_mode: Literal["nginx", "cloudfront", "s3"] = "nginx"
    cdn_base_url: str | None = Field(
        default=None,
        description=(
            "Where signed URLs point (an nginx edge, a CDN); unset: the edge `mediamill "
            "serve` embeds, `http://<MEDIAMILL_HTTP_HOST>:<MEDIAMILL_HTTP_PORT>/cdn`."
        ),
    )
    embedded_edge: bool = Field(
        default=True,
        description=(
            "`mediamill serve` also serves signed files and packages under `/cdn` (signing "
            "mode nginx only); turn off where nginx or a CDN serves them."
        ),
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="The address `mediamill serve` listens on (`--host` overrides).",
    )
    http_port: int = Field(
        default=8000, ge=1, le=65535,
        description="The port `mediamill serve` listens on (`--port` overrides).",
    )
    file_url_expires_s: int = Field(default=3600, ge=1)
    package_url_margin_s: int = Field(default=3600, ge=0)
    cloudfront_key_pair_id: str | None = None
    cloudfront_private_key_file: Path | None = None
    max_url_expires_s: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        description=(
            "The longest any signed URL lives, from every signer, `mediamill sign "
            "--expires-in` included (longer: a named 400); package URLs of longer media "
            "are cut to it. S3 presigned URLs cannot outlive 7 days anyway."
        ),
    )

    # Limits on what is processed (the largest file is `upload_max_bytes`, below). A
    # job over one fails at once with a named LimitExceededError; the asset is not
    # condemned, so raising the limit lets the same bytes through. Mux and Cloudflare
    # Stream cap durations at 12 h and 6 h; 12 h leaves room for long recordings.
    max_duration_s: float = Field(default=12 * 3600.0, gt=0)
    # 8K UHD is 7680x4320; 8192 on either side also admits DCI 8K and portrait 8K.
    max_video_width_px: int = Field(default=8192, ge=16)
    max_video_height_px: int = Field(default=8192, ge=16)
    # Decompression bombs: a file whose media would take fewer bits of file per second
    # than this is refused (10 h of silence fits in 470 KB of FLAC: 105 bps). The leanest
    # real codecs (Opus, AMR-NB) stay above 4.75 kbps, 2 kbps on average with long
    # silences; 0 turns the check off. Decoding a file thus stops after at most (file
    # bits / this) seconds of media: work bounded by the file's size.
    min_media_bitrate_bps: int = Field(default=2000, ge=0)

    # Where stages write temporary files (outputs before they are stored).
    work_dir: Path | None = None

    log_level: str = Field(
        default="INFO",
        description="Python logging level of every process.",
    )
    # /openapi.json, /docs and /redoc answer without a key (false: a read key).
    public_docs: bool = True
    http_access_log: bool = Field(
        default=True,
        description=(
            "`mediamill serve` logs a line per request (uvicorn's access log); off where "
            "nginx in front logs them (each line costs CPU on the hot path)."
        ),
    )
    # `serve` against slow and excess clients (api/server.py): connections past the cap
    # are closed unread; headers must arrive within the header timeout; a body that
    # stops arriving for the body timeout is cut; idle keep-alive connections close.
    http_max_connections: int = Field(default=10_000, ge=1)
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    http_keepalive_timeout_s: float = Field(default=5.0, gt=0)
    http_backlog: int = Field(default=2048, ge=1)
    # The nginx API proxy (`mediamill edge nginx-conf --api`): requests at once per
    # client address; past it nginx answers 503.
    edge_api_connections_per_ip: int = Field(default=100, ge=1)

    # Ingest from an http(s) URL (`POST /v0/jobs`): at most this many bytes, fetched
    # within this many seconds (a stalled read gives up after the read timeout).
    url_ingest_max_bytes: int = Field(default=4 * 1024**3, ge=1)
    url_ingest_timeout_s: float = Field(default=900.0, gt=0)
    url_ingest_read_timeout_s: float = Field(default=30.0, gt=0)
    # Private, loopback, link-local and other non-global addresses are refused as URL
    # sources (a caller must not make the service reach internal hosts) unless this is
    # set: for tests and closed networks only.
    allow_private_url_ingest: bool = False
    # URL sources on these hosts (comma-separated host names or addresses, matched
    # exactly, case-insensitively) may resolve to private addresses: a media server on
    # the closed network, without lifting the check for every other host. Every
    # redirect hop is checked against it again.
    url_ingest_allow_hosts: str = ""

    # Upload sessions (`POST /v0/uploads`): how long an upload URL stays valid, and the
    # largest declared size (5 GiB is what one presigned S3 PUT may carry).
    upload_url_expires_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    upload_max_bytes: int = Field(default=5 * 1024**3, ge=1)
    # Bucket notifications (`POST /v0/events/storage`, `mediamill listen-bucket`): the
    # bearer token MinIO's webhook sends (its `auth_token`; unset: the route refuses
    # everything), and the key prefix, inside the store's own prefix, whose new objects
    # are ingested. MediaMill's own keys (`schemas/keys.py`) never are.
    bucket_events_token: SecretStr | None = None
    bucket_events_prefix: str = "inbox/"
    # The most records one notification may carry (413 above): each costs a HEAD of
    # its object before anything is acted on.
    bucket_event_max_records: int = Field(default=100, ge=1, le=10_000)

    # Request bodies (api/body_limit.py): the most bytes any body but an upload's may
    # have (JSON bodies are read whole, before the API key is checked). The streaming
    # uploads (`POST /v0/assets`, `PUT /v0/uploads/{id}/content`) take up to
    # `upload_max_bytes` instead.
    max_json_body_bytes: int = Field(default=1024**2, ge=1)
    # An `Idempotency-Key` claimed this long ago whose request never answered (its
    # process died) may be taken over by a retry instead of staying "in progress".
    idempotency_claim_timeout_s: float = Field(default=60.0, gt=0)

    # Webhooks. Endpoints must be https:// on public addresses, except the hosts listed
    # here (comma-separated; for development and tests), which may be http:// and private.
    webhook_allow_hosts: str = ""
    # Seconds between attempts after a failure (each with jitter); after the last one
    # the delivery is failed.
    webhook_retry_schedule_s: str = "5,300,1800,7200,18000,36000,36000"
    webhook_timeout_s: float = Field(
        default=15.0, gt=0,
        description="How long one webhook delivery attempt may take.",
    )
    # An endpoint failing without a success for this long is disabled.
    webhook_disable_after_s: float = Field(default=5 * 86400.0, gt=0)
    # After a secret rotation, deliveries are signed with both secrets this long.
    webhook_rotation_grace_s: float = Field(default=86400.0, ge=0)
    webhook_dispatch_interval_s: float = Field(
        default=1.0, gt=0,
        description="How often the dispatcher looks for due deliveries.",
    )
    # A dispatcher's claim on a delivery it is attempting (it died if it lapses).
    webhook_delivery_lease_s: float = Field(default=60.0, gt=0)
    webhook_max_response_bytes: int = Field(
        default=64 * 1024, ge=1024,
        description="The most bytes of a webhook response read and logged.",
    )

    # Playback: tracking sessions, playback sessions, heartbeats and player events.
    # Heartbeats and events go to the broker's Redis (the in-process queue when
    # embedded) and reach the database in batches, flushed by a worker actor.
    edge_logs_prefix: str = Field(
        default="edge-logs/",
        pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$",
        description=(
            "Edge access logs (JSON, `mediamill edge nginx-conf`'s) dropped under this "
            "store prefix are ingested by a worker, each line once."
        ),
    )
    playback_buffer_url: str | None = Field(
        default=None,
        description=(
            "The Redis that buffers heartbeats and events (redis://); unset: the broker's, "
            "when it is Redis; with RabbitMQ and no Redis they are written straight to "
            "the database."
        ),
    )
    playback_rate_per_s: float = Field(
        default=20.0, gt=0,
        description=(
            "Requests per second one `playback` key may make from one client address "
            "(a bucket of twice that absorbs bursts); over it: 429 with Retry-After."
        ),
    )
    playback_allowed_origins: str = Field(
        default="",
        description=(
            "Comma-separated origins (`https://www.example.com`) whose pages may call the "
            "playback routes with credentials (CORS); empty: none, `*` is refused."
        ),
    )
    tracking_cookie: str = Field(
        default="__Secure-mediamill_tracking",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The name of the tracking session's cookie.",
    )
    tracking_session_ttl_s: int = Field(
        default=86_400, ge=60, le=400 * 86_400,
        description="How long a tracking session (its token and cookie) lives.",
    )
    playback_session_ttl_s: float = Field(
        default=90.0, ge=5,
        description="A playback session with no heartbeat for this long ends by itself.",
    )
    playback_heartbeat_interval_s: int = Field(
        default=30, ge=1,
        description="How often players are told to send a heartbeat (`heartbeatIntervalS`).",
    )
    playback_url_expires_s: int = Field(
        default=3600, ge=60,
        description="How long a playback session's signed HLS and DASH URLs live.",
    )
    playback_url_refresh_margin_s: int = Field(
        default=300, ge=1,
        description=(
            "`tokenRefreshBefore` is this long before the URLs expire; heartbeats after it "
            "get fresh URLs."
        ),
    )
    max_concurrent_streams: int | None = Field(
        default=None, ge=1,
        description=(
            "Active playback sessions allowed per device id (and per user id when there is "
            "one); unset: no limit. The next one is a 409 ConcurrentStreamsExceededError."
        ),
    )
    playback_flush_interval_s: float = Field(
        default=1.0, gt=0, le=60,
        description="How long heartbeats and events gather before a flush writes them.",
    )
    playback_flush_batch: int = Field(
        default=2000, ge=1, le=100_000,
        description="The most buffered entries one flush writes in a transaction.",
    )
    playback_claim_idle_s: float = Field(
        default=30.0, gt=0,
        description=(
            "Entries a flush took but did not confirm for this long (its worker died) are "
            "taken over by another flush."
        ),
    )
    view_min_watch_s: float = Field(
        default=30.0, gt=0, le=86_400,
        description=(
            "A view counts once it watched this long, or half of a shorter asset "
            "(docs/analytics.md)."
        ),
    )
    analytics_tz: str = Field(
        default="UTC",
        description=(
            "The time zone of analytics date-times given without an offset, and of the "
            "day and month buckets (an IANA name)."
        ),
    )
    analytics_raw_retention_days: int = Field(
        default=90, ge=1, le=36_500,
        description="Raw views are kept this long; their rollups are kept for ever.",
    )
    analytics_rollup_delay_s: float = Field(
        default=60.0, ge=0, le=3600,
        description=(
            "An hour is rolled up this long after it ends (late events of the hour land "
            "first); until then queries read its raw views."
        ),
    )

    @field_validator(
        "broker_url", "database_url", "storage_url", "ffmpeg", "playback_buffer_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("analytics_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            problem = f"{value!r} is not an IANA time zone (such as UTC, Europe/Paris)"
            raise ValueError(problem) from None
        return value

    @property
    def analytics_zone(self) -> ZoneInfo:
        return ZoneInfo(self.analytics_tz)

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in {"redis", "rediss", "amqp", "amqps"}:
            raise ValueError(
                "MEDIAMILL_BROKER_URL must be redis://, rediss://, amqp:// or amqps://"
            )
        return value

    @field_validator("playback_buffer_url")
    @classmethod
    def _redis_buffer(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in {"redis", "rediss"}:
            raise ValueError("MEDIAMILL_PLAYBACK_BUFFER_URL must be redis:// or rediss://")
        return value

    @field_validator("storage_url")
    @classmethod
    def _known_store(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in {"file", "s3"}:
            raise ValueError("MEDIAMILL_STORAGE_URL must be file:///path or s3://bucket[/prefix]")
        return value

    @field_validator("cdn_base_url")
    @classmethod
    def _http_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlparse(value).scheme not in {"http", "https"} or not urlparse(value).netloc:
            raise ValueError("MEDIAMILL_CDN_BASE_URL must be an http(s):// URL")
        return value.rstrip("/")

    @field_validator("playback_allowed_origins")
    @classmethod
    def _explicit_origins(cls, value: str) -> str:
        for origin in filter(None, (o.strip() for o in value.split(","))):
            parsed = urlparse(origin)
            if (
                parsed.scheme not in {"http", "https"}
                or not parsed.netloc
                or parsed.path not in {"", "/"}
                or parsed.query
                or "*" in origin
            ):
                raise ValueError(
                    "MEDIAMILL_PLAYBACK_ALLOWED_ORIGINS lists explicit origins such as "
                    f"https://www.example.com (credentials forbid `*`), not {origin!r}"
                )
        return value

    @model_validator(mode="after")
    def _playback_times_fit(self) -> Settings:
        """Times that would break every session: one ended between its heartbeats, URLs
        due for refresh before they are handed out."""
        if self.playback_heartbeat_interval_s * 2 > self.playback_session_ttl_s:
            raise ValueError(
                f"MEDIAMILL_PLAYBACK_SESSION_TTL_S ({self.playback_session_ttl_s:g}) must be at "
                "least twice MEDIAMILL_PLAYBACK_HEARTBEAT_INTERVAL_S "
                f"({self.playback_heartbeat_interval_s}): a session would end between heartbeats"
            )
        if self.playback_url_refresh_margin_s >= self.playback_url_expires_s:
            raise ValueError(
                "MEDIAMILL_PLAYBACK_URL_REFRESH_MARGIN_S "
                f"({self.playback_url_refresh_margin_s}) must be under "
                f"MEDIAMILL_PLAYBACK_URL_EXPIRES_S ({self.playback_url_expires_s})"
            )
        return self

    @property
    def playback_origins(self) -> frozenset[str]:
        """The origins of `playback_allowed_origins`, without a trailing slash."""
        origins = (o.strip().rstrip("/") for o in self.playback_allowed_origins.split(","))
        return frozenset(o for o in origins if o)

    @property
    def embedded(self) -> bool:
        """True when nothing points at an external service: one process does everything."""
        return self.broker_url is None and self.database_url is None and self.storage_url is None

    @property
    def in_process_queue(self) -> bool:
        """No broker URL: the queue is in this process, so this process must run the
        worker that consumes it, whatever the database and store are."""
        return self.broker_url is None

    @property
    def mode(self) -> Literal["embedded", "single node", "distributed"]:
        """embedded: nothing configured; single node: a database or store configured but
        no broker (one process queues and works); distributed: a shared broker."""
        if self.embedded:
            return "embedded"
        return "single node" if self.in_process_queue else "distributed"

    @property
    def resolved_worker_threads(self) -> int:
        """`worker_threads`, else THREADS_PER_CORE per core this process may use."""
        if self.worker_threads is not None:
            return self.worker_threads
        return min(64, THREADS_PER_CORE * len(os.sched_getaffinity(0)))

    @property
    def resolved_data_dir(self) -> Path:
        if self.data_dir is None:
            import platformdirs

            return platformdirs.user_data_path("mediamill").resolve()
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_cdn_base_url(self) -> str:
        """`cdn_base_url`, else the embedded edge of `mediamill serve` at its address."""
        if self.cdn_base_url is not None:
            return self.cdn_base_url
        host = self.http_host
        if host in {"0.0.0.0", "::", "", "*"}:  # every address: this machine's own opens
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}{EMBEDDED_EDGE_PATH}"

    @property
    def serves_embedded_edge(self) -> bool:
        """Whether `mediamill serve` serves signed files itself (`EMBEDDED_EDGE_PATH`)."""
        return self.embedded_edge and self.signing_mode == "nginx"

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return (self.resolved_data_dir / "store").as_uri()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'mediamill.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_work_dir(self) -> Path:
        return (self.work_dir or self.resolved_data_dir / "work").expanduser().resolve()

    @property
    def ffmpeg_path(self) -> str:
        """The ffmpeg binary: `MEDIAMILL_FFMPEG`, else the one in the imageio-ffmpeg wheel."""
        if self.ffmpeg:
            return self.ffmpeg
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()

    def resolved_signing_secret(self) -> str:
        """The URL/event signing secret.

        Without a broker (embedded, single node): generated once and kept in the data
        dir. With one it must be set, since every API and worker process has to sign
        with the same one.
        """
        if self.signing_secret is not None:
            value = self.signing_secret.get_secret_value()
            if len(value) < 16:
                raise ConfigError("MEDIAMILL_SIGNING_SECRET must be at least 16 characters")
            return value
        if not self.in_process_queue:
            raise ConfigError(
                "MEDIAMILL_SIGNING_SECRET must be set when a broker URL is configured "
                "(every API and worker process must sign with the same one)"
            )
        path = self.resolved_data_dir / SIGNING_SECRET_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(32))
            tmp.chmod(0o600)
            try:
                tmp.rename(path) if not path.exists() else tmp.unlink()
            except OSError:
                tmp.unlink(missing_ok=True)
        return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
