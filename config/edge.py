"""The nginx edge: a complete `nginx.conf` serving the local blob store behind signed URLs.

`render_nginx_conf` is pure: listen address, store root, state directory and
secret in, configuration text out (`mediamill edge nginx-conf` prints it). nginx's
`secure_link` module checks the two URL forms of `pipeline/signing.py`:

  a file     /{key}?md5={token}&expires={epoch}
             token = base64url(MD5("mediamill-file:{expires}/{key} {secret}")), no padding
  a package  /p/{token}/{expires}/{prefix}/{assetId}/{packageId}/{relative path}
             token = base64url(MD5("mediamill-package:{expires}/{prefix}/{assetId}/{packageId}
             {secret}"))
  a session  /s/{token}/{expires}/{sessionId}/{prefix}/{assetId}/{packageId}/{relative path}
             token = base64url(MD5("mediamill-session:{expires}/{sessionId}/{prefix}/...
             {secret}")): a package for one playback session

(each form's own domain label, `config/url_tokens.py`, so no token opens another form).

`prefix` is the store's package prefix (`schemas/keys.py`, passed in: this room
imports nothing of ours).

Every request is also logged as one JSON object (`ACCESS_LOG_FORMAT`, in
`{state}/access.json.log`) for `mediamill ingest-edge-logs`.

A missing or wrong token answers 403, an expired one 410. Dot paths (the store's
`.tmp/` of in-flight writes) answer 404, symbolic links are never followed, and
every path nginx serves is normalised before the check, so `..` cannot leave the
root. Every absolute path the server writes (pid, logs, temp files) lives under
the state directory, so it runs unprivileged with `nginx -p STATE -c FILE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mediamill.config.settings import ConfigError, Settings
from mediamill.config.url_tokens import TokenDomain, nginx_token_input

# Content types by extension (nginx's stock mime.types lacks several of these).
EDGE_CONTENT_TYPES: dict[str, str] = {
    "m3u8": "application/vnd.apple.mpegurl",
    "mpd": "application/dash+xml",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",  # Opus in Ogg
    "flac": "audio/flac",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
}
MANIFEST_MAX_AGE_S = 10
MEDIA_MAX_AGE_S = 86_400
ACCESS_LOG_NAME = "access.json.log"

# The JSON access log `mediamill ingest-edge-logs` reads: one object a request, with
# the playback session a session URL names and the store key served, both read from
# the request as sent ($request_uri: `try_files` rewrites $uri to the file). It holds client
# addresses and user agents: keep it as private as any access log (the ingest stores
# neither).
ACCESS_LOG_FORMAT = """\
map $request_uri $mediamill_log_session {
    default "";
    "~^/s/[A-Za-z0-9_-]+/[0-9]+/(?<mm_session>[A-Za-z0-9-]{1,64})/" $mm_session;
}
map $request_uri $mediamill_log_key {
    default "";
    "~^/s/[^/?]+/[0-9]+/[^/?]+/(?<mm_key>[^?]+)" $mm_key;
    "~^/p/[^/?]+/[0-9]+/(?<mm_key>[^?]+)" $mm_key;
    "~^/(?<mm_key>[^?]+)" $mm_key;
}
log_format mediamill_json escape=json '{"time":"$time_iso8601","msec":$msec,'
    '"session":"$mediamill_log_session","key":"$mediamill_log_key","status":$status,'
    '"bytes":$body_bytes_sent,"requestTime":$request_time,"method":"$request_method",'
    '"userAgent":"$http_user_agent","client":"$remote_addr"}';"""

# What cannot sit literally inside a double-quoted nginx string: `$` starts a
# variable, quotes and `\` end or escape it, `;` `{` `}` and whitespace end
# directives when the quoting is off by one.
_UNSAFE = re.compile(r"[\s$\"';{}\\]")
_LISTEN = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\*)"
    r":(?P<port>[0-9]{1,5})$"
)
# The identifiers NginxSigner accepts in a package prefix, and the key characters.
_ID = r"[A-Za-z0-9._-]+"
_KEY_CHARS = r"[A-Za-z0-9._=/-]+"


def checked_secret(secret: str) -> str:
    """`secret` if it can be written literally into the configuration, else ConfigError."""
    if not secret:
        raise ConfigError("the signing secret is empty")
    bad = sorted({repr(c) for c in _UNSAFE.findall(secret)})
    if bad or not secret.isascii() or not secret.isprintable():
        shown = ", ".join(bad) if bad else "non-printable or non-ASCII characters"
        raise ConfigError(
            "MEDIAMILL_SIGNING_SECRET cannot be used in an nginx configuration: it contains "
            f"{shown} (use letters, digits and punctuation other than $ ' \" ; {{ }} \\)"
        )
    return secret


def checked_listen(listen: str) -> str:
    """`listen` if it is HOST:PORT (an IPv4 address, a host name, `*` or `[IPv6]`)."""
    match = _LISTEN.match(listen)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(
            f"--listen must be HOST:PORT with a port from 1 to 65535 "
            f"(e.g. 127.0.0.1:8080 or [::1]:8080), not {listen!r}"
        )
    return listen


def checked_dir(path: Path | str, what: str) -> str:
    """An absolute directory path, resolved, that can be written unquoted into the file."""
    given = Path(path)
    if not given.is_absolute():
        raise ConfigError(f"{what} must be an absolute path, not {str(path)!r}")
    resolved = given.resolve()
    if _UNSAFE.search(str(resolved)) or not str(resolved).isprintable():
        raise ConfigError(
            f"{what} {str(resolved)!r} contains characters an nginx configuration cannot "
            "hold unquoted (whitespace, quotes, $ ; { } \\)"
        )
    return PurePosixPath(resolved).as_posix()


_UPSTREAM = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$"
)


@dataclass(frozen=True)
class ApiProxy:
    """The nginx server in front of `mediamill serve`: where it listens, the API's
    HOST:PORT, and the limits that keep slow or greedy clients off the API (nginx
    buffers each request whole before it reaches the upstream)."""

    upstream: str
    listen: str = "0.0.0.0:8000"
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 5.0
    max_connections_per_ip: int = 100
    max_body_bytes: int = 5 * 1024**3

    @classmethod
    def from_settings(
        cls, settings: Settings, upstream: str, listen: str = "0.0.0.0:8000"
    ) -> ApiProxy:
        """The proxy with the same timeouts `serve` applies, and the upload size limit."""
        return cls(
            upstream=upstream,
            listen=listen,
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            keepalive_timeout_s=settings.http_keepalive_timeout_s,
            max_connections_per_ip=settings.edge_api_connections_per_ip,
            max_body_bytes=settings.upload_max_bytes,
        )

    def checked(self) -> ApiProxy:
        port = int(self.upstream.rsplit(":", 1)[1]) if _UPSTREAM.match(self.upstream) else 0
        if not 1 <= port <= 65535:
            raise ConfigError(f"--api must be HOST:PORT of the API, not {self.upstream!r}")
        checked_listen(self.listen)
        if min(self.header_timeout_s, self.body_timeout_s, self.keepalive_timeout_s) <= 0:
            raise ConfigError("the API proxy's timeouts must be positive")
        if self.max_connections_per_ip < 1 or self.max_body_bytes < 1:
            raise ConfigError("the API proxy's limits must be positive")
        return self


def render_api_proxy(proxy: ApiProxy, indent: str = "") -> str:
    """The http-level directives and `server` block proxying to the API: a file for
    nginx's conf.d, or part of `render_nginx_conf`."""
    p = proxy.checked()
    text = f"""# MediaMill API behind nginx (`mediamill edge nginx-conf --api {p.upstream}`):
# requests are read whole here, so a client that sends its headers or body slowly
# holds an nginx connection, never the API's, and is cut after the timeouts below.
limit_conn_zone $binary_remote_addr zone=mediamill_api_conn:10m;
upstream mediamill_api {{
    server {p.upstream};
    keepalive 32;
}}
server {{
    listen {p.listen};
    server_name _;
    client_header_timeout {_seconds(p.header_timeout_s)};
    client_body_timeout {_seconds(p.body_timeout_s)};
    keepalive_timeout {_seconds(p.keepalive_timeout_s)};
    send_timeout {_seconds(p.body_timeout_s)};
    client_max_body_size {p.max_body_bytes};
    limit_conn mediamill_api_conn {p.max_connections_per_ip};
    limit_conn_status 503;
    limit_conn_log_level warn;
    location / {{
        proxy_pass http://mediamill_api;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 3600s;
    }}
}}
"""
    return "".join(f"{indent}{line}" if line else line for line in text.splitlines(True))


def _indented(text: str, indent: str) -> str:
    return "".join(f"{indent}{line}" if line.strip() else line for line in text.splitlines(True))


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def _types_block(indent: str) -> str:
    by_type: dict[str, list[str]] = {}
    for ext, content_type in EDGE_CONTENT_TYPES.items():
        by_type.setdefault(content_type, []).append(ext)
    lines = [f"{indent}    {t} {' '.join(exts)};" for t, exts in by_type.items()]
    return f"{indent}types {{\n" + "\n".join(lines) + f"\n{indent}}}"


def render_nginx_conf(
    *,
    listen: str,
    root: Path | str,
    secret: str,
    state_dir: Path | str,
    manifest_max_age_s: int = MANIFEST_MAX_AGE_S,
    media_max_age_s: int = MEDIA_MAX_AGE_S,
    api: ApiProxy | None = None,
    packages_prefix: str,
) -> str:
    """A complete nginx.conf serving the local store at `root` behind signed URLs;
    `packages_prefix` is the first segment of every package key (`keys.PACKAGES`).

    `state_dir` holds the pid file, the logs and nginx's temp directories; it must
    exist and be writable by whoever starts nginx. The secret is written into the
    file, so keep the file as private as the secret.
    """
    listen = checked_listen(listen)
    root_dir = checked_dir(root, "the store root")
    state = checked_dir(state_dir, "the state directory")
    secret = checked_secret(secret)
    if not re.fullmatch(r"[a-z]+", packages_prefix):
        raise ConfigError(f"not a package prefix: {packages_prefix!r}")
    api_block = "" if api is None else "\n" + render_api_proxy(api, "    ")
    if manifest_max_age_s < 0 or media_max_age_s < 0:
        raise ConfigError("cache lifetimes cannot be negative")
    media_exts = "|".join(e for e in EDGE_CONTENT_TYPES if e not in {"m3u8", "mpd"})
    package = (
        rf"^/p/(?<edge_token>[A-Za-z0-9_-]+)/(?<edge_expires>[0-9]+)"
        rf"/(?<edge_prefix>{packages_prefix}/{_ID}/{_ID})/(?<edge_file>{_KEY_CHARS})$"
    )
    package_check = nginx_token_input(TokenDomain.PACKAGE, "$edge_expires", "/$edge_prefix", secret)
    session = (
        rf"^/s/(?<edge_token>[A-Za-z0-9_-]+)/(?<edge_expires>[0-9]+)"
        rf"/(?<edge_session>[A-Za-z0-9-]{{1,64}})"
        rf"/(?<edge_prefix>{packages_prefix}/{_ID}/{_ID})/(?<edge_file>{_KEY_CHARS})$"
    )
    session_check = nginx_token_input(
        TokenDomain.SESSION, "$edge_expires", "/$edge_session/$edge_prefix", secret
    )
    file_check = nginx_token_input(TokenDomain.FILE, "$secure_link_expires", "$uri", secret)
    return f"""\
# MediaMill edge: the local blob store behind nginx secure_link signed URLs.
# Generated by `mediamill edge nginx-conf`; it holds the signing secret, keep it private.
# Run:  nginx -p {state} -c /path/to/this/file -g 'daemon off;'
#       (as root add `user root;` to -g, or let the workers' user read {root_dir})
#   file     /<key>?md5=<token>&expires=<epoch>
#   package  /p/<token>/<expires>/{packages_prefix}/<assetId>/<packageId>/<file under the package>
#   session  /s/<token>/<expires>/<sessionId>/{packages_prefix}/<assetId>/<packageId>/<file>
# A missing or wrong token answers 403, an expired one 410.

worker_processes auto;
pid {state}/nginx.pid;
error_log {state}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    # Every path nginx would otherwise take from its build lives under the state dir.
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    access_log {state}/access.log;
{_indented(ACCESS_LOG_FORMAT, "    ")}
    access_log {state}/{ACCESS_LOG_NAME} mediamill_json;

    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    server_tokens off;

{_types_block("    ")}
    default_type application/octet-stream;

    # Manifests may be re-made, media under a key never changes. Empty: no header.
    map $uri $mediamill_cache_control {{
        default "";
        "~\\.(m3u8|mpd)$" "public, max-age={manifest_max_age_s}";
        "~\\.({media_exts})$" "public, max-age={media_max_age_s}";
    }}

    server {{
        listen {listen};
        server_name _;
        root {root_dir};
        autoindex off;
        # A link inside the store must not lead out of it.
        disable_symlinks on from=$document_root;

        # CORS for browser players; `always` so 403/410 reach the page's script too.
        add_header Access-Control-Allow-Origin "*" always;
        add_header Access-Control-Allow-Methods "GET, HEAD, OPTIONS" always;
        add_header Access-Control-Allow-Headers "Range" always;
        add_header Access-Control-Expose-Headers "Content-Length, Content-Range" always;
        add_header Access-Control-Max-Age "86400" always;
        add_header Cache-Control $mediamill_cache_control;

        if ($request_method = OPTIONS) {{
            return 204;
        }}
        if ($request_method !~ "^(GET|HEAD)$") {{
            return 405;
        }}

        # Dot paths are never keys: `.tmp/` holds in-flight writes.
        location ~ "(^|/)\\." {{
            return 404;
        }}

        # A package: the token covers every file under its prefix, so the relative
        # URIs inside the HLS and DASH manifests inherit it.
        location ~ "{package}" {{
            secure_link $edge_token,$edge_expires;
            secure_link_md5 "{package_check}";
            if ($secure_link = "") {{
                return 403;
            }}
            if ($secure_link = "0") {{
                return 410;
            }}
            try_files /$edge_prefix/$edge_file =404;
        }}

        # A package for one playback session: the session id is signed, and every
        # segment request names it (the JSON access log's `session`).
        location ~ "{session}" {{
            secure_link $edge_token,$edge_expires;
            secure_link_md5 "{session_check}";
            if ($secure_link = "") {{
                return 403;
            }}
            if ($secure_link = "0") {{
                return 410;
            }}
            try_files /$edge_prefix/$edge_file =404;
        }}

        # Malformed package URLs.
        location /p/ {{
            return 403;
        }}
        location /s/ {{
            return 403;
        }}

        # A file: the token covers exactly one key.
        location / {{
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "{file_check}";
            if ($secure_link = "") {{
                return 403;
            }}
            if ($secure_link = "0") {{
                return 410;
            }}
            try_files $uri =404;
        }}
    }}
{api_block}}}
"""
