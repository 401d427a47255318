"""The `mediamill` command line: analyse, process, ingest, worker, jobs, db.

Heavy imports (SQLAlchemy, dramatiq, boto3) happen inside the commands that need
them, so `mediamill analyse` stays light in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mediamill import __version__
from mediamill.schemas import keys
from mediamill.schemas.renditions import AUDIO_FORMATS

EXIT_ERROR = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", None) or "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    from pydantic import ValidationError

    from mediamill.schemas.errors import ConfigError, MediaMillError

    try:
        return int(args.func(args) or 0)
    except MediaMillError as exc:
        _print_error(exc.name, exc.message)
    except ConfigError as exc:
        _print_error("ConfigError", str(exc))
    except ValidationError as exc:
        _print_error("ConfigError", str(exc).replace("\n", " "))
    except Exception as exc:
        from sqlalchemy.exc import OperationalError

        if not isinstance(exc, OperationalError):
            raise
        _print_error("StorageError", f"the database is unreachable: {exc.orig}")
    except KeyboardInterrupt:
        _print_error("Interrupted", "stopped by the user")
    return EXIT_ERROR


def _valid_config() -> bool:
    """Check the whole configuration before taking work: False after printing every
    problem on its own `error: ConfigError: ...` line (the caller exits non-zero)."""
    from mediamill.config.settings import get_settings
    from mediamill.workers.config_check import check_configuration

    report = check_configuration(get_settings())
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not report.ok:
        for problem in report.problems:
            _print_error("ConfigError", problem)
    return report.ok


def cmd_config_docs(args: argparse.Namespace) -> int:
    """The configuration reference (every variable, default, meaning), from Settings."""
    from mediamill.config.reference import REFERENCE_PATH, render_reference

    text = render_reference()
    if args.write:
        REFERENCE_PATH.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """The effective configuration (secrets masked), the mode, and every problem."""
    from mediamill.config.settings import get_settings
    from mediamill.workers.config_check import check_configuration

    report = check_configuration(get_settings(), services=not args.no_services)
    if args.json:
        _emit_json({**report.model_dump(), "ok": report.ok})
    else:
        print(f"mode      {report.mode}")
        for name, value in report.effective.items():
            print(f"  {name:34} {value}")
        for warning in report.warnings:
            print(f"warning: {warning}")
        for problem in report.problems:
            print(f"problem: {problem}")
        print("configuration ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else EXIT_ERROR


def _print_error(name: str, message: str) -> None:
    print(f"error: {name}: {message}", file=sys.stderr)


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, argparse.SUPPRESS) or not (
            action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    """argparse with defaults in every --help; subcommands are made of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)


def _describe(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give each subcommand without a description its one-line help as one, so that
    `mediamill COMMAND --help` says what the command does, not only its options."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                sub = action.choices[choice.dest]
                if sub.description is None:
                    sub.description = choice.help
                _describe(sub)
    return parser


def _parser() -> argparse.ArgumentParser:
    return _describe(_commands())


def _commands() -> argparse.ArgumentParser:
    p = _Parser(prog="mediamill", description="MediaMill media pipeline")
    p.add_argument("--version", action="version", version=f"mediamill {__version__}")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    sub = p.add_subparsers(metavar="COMMAND")

    c = sub.add_parser("analyse", help="probe and measure a file (no queue, no database)")
    c.add_argument("file", type=Path)
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_analyse)

    c = sub.add_parser(
        "process",
        help="ingest, analyse, transcode and package a file, with a worker in this process",
        description=(
            "Store FILE (content-addressed), measure it, transcode the default renditions, "
            "package HLS + DASH, all through the queue with a worker in this process, and "
            "print the asset, the renditions and their signed URLs. Exits 1 when any of "
            "them failed, naming each."
        ),
    )
    c.add_argument("file", type=Path)
    c.add_argument("--json", action="store_true", help="print one JSON object, every field")
    c.add_argument("--wide", action="store_true", help="every table column, whatever the width")
    c.set_defaults(func=cmd_process)

    c = sub.add_parser("transcode", help="one rendition of a file, no queue or database")
    c.add_argument("file", type=Path)
    c.add_argument("--format", required=True, choices=[f.value for f in AUDIO_FORMATS])
    c.add_argument("--bitrate", type=int, default=None, help="bps; lossy formats")
    c.add_argument("--channels", type=int, required=True, choices=[1, 2])
    c.add_argument("--sample-rate", type=int, default=None, help="Hz")
    c.add_argument("--exact", action="store_true", help="fail rather than deliver less")
    c.add_argument("--loudness", type=float, default=None, help="integrated target, LUFS")
    c.add_argument("--true-peak", type=float, default=-1.0, help="ceiling, dBTP")
    c.add_argument("-o", "--output", type=Path, required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_transcode)

    c = sub.add_parser("ingest", help="enqueue ingest of a file on the configured broker")
    c.add_argument("file", type=Path)
    c.add_argument("--json", action="store_true", help="print the Job")
    c.set_defaults(func=cmd_ingest)

    c = sub.add_parser("worker", help="consume the configured broker")
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=cmd_worker)

    jobs = sub.add_parser("jobs", help="inspect jobs").add_subparsers(metavar="ACTION")
    c = jobs.add_parser("show", help="one job with its children")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.add_argument("--wide", action="store_true", help="every column and whole ids")
    c.set_defaults(func=cmd_jobs_show)
    c = jobs.add_parser("list", help="jobs, newest first")
    c.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    c.add_argument("--limit", type=_page_size, default=50, help="1 to 1000")
    c.add_argument("--cursor", default=None, help="nextCursor of the previous page")
    c.add_argument("--json", action="store_true")
    c.add_argument("--wide", action="store_true", help="every column and whole ids")
    c.set_defaults(func=cmd_jobs_list)

    config = sub.add_parser("config", help="the configuration").add_subparsers(metavar="ACTION")
    c = config.add_parser(
        "check", help="print the effective configuration, the mode and every problem"
    )
    c.add_argument("--json", action="store_true")
    c.add_argument(
        "--no-services", action="store_true", help="do not connect to the database, broker, store"
    )
    c.set_defaults(func=cmd_config_check)
    c = config.add_parser("docs", help="print docs/configuration.md, generated from Settings")
    c.add_argument("--write", action="store_true", help="write docs/configuration.md instead")
    c.set_defaults(func=cmd_config_docs)

    db = sub.add_parser("db", help="database schema").add_subparsers(metavar="ACTION")
    c = db.add_parser("upgrade", help="apply Alembic migrations")
    c.set_defaults(func=cmd_db_upgrade)

    c = sub.add_parser(
        "serve",
        help="run the HTTP API and the embedded edge (embedded: with an in-process worker)",
        description=(
            "Run the HTTP API; with signing mode nginx it also serves signed files and "
            "packages under /cdn (the default MEDIAMILL_CDN_BASE_URL). On the embedded "
            "default the worker runs inside the server."
        ),
    )
    c.add_argument(
        "--host", default=None, help="listen address (default: MEDIAMILL_HTTP_HOST, 127.0.0.1)"
    )
    c.add_argument(
        "--port", type=int, default=None, help="listen port (default: MEDIAMILL_HTTP_PORT, 8000)"
    )
    c.set_defaults(func=cmd_serve)

    assets = sub.add_parser("assets", help="list, show and delete assets").add_subparsers(
        metavar="ACTION"
    )
    c = assets.add_parser("list", help="live assets, newest first")
    c.add_argument("--status", choices=["stored", "analysing", "analysed", "failed"])
    c.add_argument("--type", choices=["audio", "video"], dest="kind")
    c.add_argument("--oldest-first", action="store_true", help="sort by creation, oldest first")
    c.add_argument("--limit", type=int, default=50, help="1 to 200")
    c.add_argument("--cursor", default=None, help="nextCursor of the previous page")
    c.add_argument("--json", action="store_true")
    c.add_argument("--wide", action="store_true", help="every column and whole ids")
    c.set_defaults(func=cmd_assets_list)
    c = assets.add_parser("show", help="one asset with its renditions and packages")
    c.add_argument("asset_id", metavar="ASSET_ID")
    c.add_argument("--json", action="store_true")
    c.add_argument("--wide", action="store_true", help="every column of the renditions")
    c.set_defaults(func=cmd_assets_show)
    c = assets.add_parser(
        "delete", help="delete an asset: its original, renditions and packages leave the store"
    )
    c.add_argument("asset_id", metavar="ASSET_ID")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_assets_delete)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(metavar="ACTION")
    c = keys.add_parser("create", help="create an API key; the token is printed once")
    c.add_argument(
        "--scope",
        choices=["admin", "read", "playback"],
        required=True,
        help="admin: everything; read: reads; playback: publishable, playback routes only",
    )
    c.add_argument("--name", help="a label for the key")
    c.add_argument("--json", action="store_true", help='print {"clientId", "token", "apiKey"}')
    c.add_argument(
        "--quiet", action="store_true", help="print only the apiKey (KEY=$(... --quiet))"
    )
    c.set_defaults(func=cmd_keys_create)
    c = keys.add_parser("list", help="API keys, newest first (never their tokens)")
    c.add_argument("--all", action="store_true", help="revoked keys too")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_keys_list)
    c = keys.add_parser("revoke", help="revoke an API key")
    c.add_argument("client_id", metavar="CLIENT_ID")
    c.set_defaults(func=cmd_keys_revoke)

    hooks = sub.add_parser("webhooks", help="webhook endpoints").add_subparsers(metavar="ACTION")
    c = hooks.add_parser("add", help="register an endpoint; its secret is printed once")
    c.add_argument("url", metavar="URL")
    c.add_argument("--events", nargs="+", required=True, metavar="E", help="event types, or *")
    c.add_argument("--description", default=None, metavar="D")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_webhooks_add)
    c = hooks.add_parser("list", help="endpoints, newest first")
    c.add_argument("--limit", type=_page_size, default=50, help="1 to 200")
    c.add_argument("--cursor", default=None, help="nextCursor of the previous page")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_webhooks_list)
    c = hooks.add_parser("deliveries", help="an endpoint's delivery log, newest first")
    c.add_argument("id", metavar="ID")
    c.add_argument("--status", choices=["pending", "delivered", "failed", "retrying"])
    c.add_argument("--limit", type=_page_size, default=50, help="1 to 200")
    c.add_argument("--cursor", default=None, help="nextCursor of the previous page")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_webhooks_deliveries)
    c = hooks.add_parser("redeliver", help="queue a delivery again, due now")
    c.add_argument("id", metavar="ID")
    c.add_argument("delivery_id", metavar="DELIVERY_ID")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_webhooks_redeliver)

    edge = sub.add_parser("edge", help="delivery edge configuration").add_subparsers(
        metavar="ACTION"
    )
    c = edge.add_parser("nginx-conf", help="print an nginx.conf serving the local store signed")
    c.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="%(default)s")
    c.add_argument("--root", type=Path, metavar="DIR", help="default: the file:// store")
    c.add_argument("--state-dir", type=Path, metavar="DIR", help="pid, logs; DATA_DIR/edge")
    c.add_argument(
        "--api", metavar="UPSTREAM", help="also proxy the API at HOST:PORT (slow-client limits)"
    )
    c.add_argument("--api-listen", default="0.0.0.0:8000", metavar="HOST:PORT", help="%(default)s")
    c.add_argument(
        "--api-only", action="store_true",
        help="print only the API proxy (http-level directives and server) for nginx's conf.d",
    )  # fmt: skip
    c.set_defaults(func=cmd_edge_nginx_conf)

    c = sub.add_parser(
        "ingest-edge-logs",
        help="segment requests of the edge's JSON access logs into playback sessions",
    )
    c.add_argument("files", nargs="+", type=Path, metavar="FILE", help="access.json.log files")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_ingest_edge_logs)

    c = sub.add_parser("sign", help="a signed delivery URL for a stored file or a package")
    c.add_argument("key", nargs="?", default=None, help="store key of a file")
    c.add_argument("--package", metavar="ASSET_ID/PACKAGE_ID", default=None)
    c.add_argument("--expires-in", type=int, default=None, metavar="S", help="seconds")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_sign)

    c = sub.add_parser(
        "listen-bucket", help="ingest new objects of a MinIO bucket as they arrive (listen API)"
    )
    c.add_argument("bucket", metavar="BUCKET", help="the S3 store's bucket")
    c.add_argument("--json", action="store_true", help="one JSON object per record")
    c.set_defaults(func=cmd_listen_bucket)
    return p


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return value


# ---- output ---------------------------------------------------------------------------------


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _interactive(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) and sys.stdout.isatty()


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Callable[[float, str | None], None]]:
    """A rich progress bar on a terminal; a no-op otherwise (and always with --json)."""
    if not enabled:
        yield lambda fraction, stage=None: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=1.0)

        def update(fraction: float, stage: str | None = None) -> None:
            bar.update(task, completed=fraction, description=stage or label)

        yield update


def _print_asset_table(asset: dict[str, Any], title: str = "Asset") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")  # ids and keys whole, over two lines
    for key, value in asset.items():
        if key == "tracks" and isinstance(value, dict):
            value = ", ".join(
                f"{kind} #{t['index']} of {t['count']} ({t.get('language') or 'und'})"
                for kind, t in value.items()
                if t
            ) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, float):
            value = f"{value:.2f}"
        table.add_row(key, "-" if value is None else str(value))
    Console().print(table)


def _rendition_name(rendition: dict[str, Any]) -> str:
    """`mp3-128000-2`, `mp4-720-3000000-2`: a rendition's spec in one word."""
    spec = rendition["spec"]
    parts = (spec["format"], spec.get("height"), spec.get("bitrate"), spec.get("channels"))
    return "-".join(str(v) for v in parts if v)


def _print_renditions_table(renditions: list[dict[str, Any]], wide: bool = False) -> None:
    from mediamill.cli_tables import RENDITION_COLUMNS, print_table, rendition_row

    rows = [rendition_row(r, _rendition_name(r)) for r in renditions]
    print_table(RENDITION_COLUMNS, rows, title="Renditions", wide=wide)


def _print_jobs_table(
    jobs: list[dict[str, Any]], wide: bool = False, messages: bool = True
) -> None:
    """The jobs; with `messages`, each error's message in full under the table (`process`
    says its failures itself, once)."""
    from mediamill.cli_tables import JOB_COLUMNS, error_lines, job_row, print_table

    print_table(JOB_COLUMNS, [job_row(j, wide) for j in jobs], title="Jobs", wide=wide)
    named = [(f"{j['type']} {j['id'] if wide else j['id'][:8]}", j.get("error")) for j in jobs]
    for line in error_lines(named) if messages else []:
        print(line)


# ---- commands -------------------------------------------------------------------------------


def cmd_analyse(args: argparse.Namespace) -> int:
    """Probe and measure FILE; hashing runs in a thread beside the decode (one wall-clock
    pass), the decode in a child process (a file that crashes the decoder is reported
    as WorkerCrashedError, not a dead command)."""
    from mediamill.config.settings import get_settings
    from mediamill.pipeline.hashing import sha256_file
    from mediamill.schemas.media import Asset
    from mediamill.workers.native import NativePool

    path = _existing_file(args.file)
    # The child imports while this process starts hashing.
    native = NativePool(1, test_crashes=get_settings().test_crashes).start()
    digest: dict[str, Any] = {}

    def hash_file() -> None:
        digest["sha"], digest["size"] = sha256_file(path)

    hasher = threading.Thread(target=hash_file)
    hasher.start()
    try:
        with _progress(_interactive(args), "analyse") as update:
            result = native.analyse(path, on_progress=lambda f: update(f, None))
    finally:
        hasher.join()
        native.close()
    asset = Asset.from_analysis(digest["sha"], digest["size"], result)
    body = asset.model_dump(
        mode="json",
        by_alias=True,
        exclude={"status", "error", "deleted", "created", "modified", "legacy_track_tokens"},
    )
    if args.json:
        _emit_json(body)
    else:
        _print_asset_table(body)
    return 0


def cmd_transcode(args: argparse.Namespace) -> int:
    """Analyse FILE, apply the quality rules, encode one rendition to OUT, measure it."""
    import shutil
    import tempfile

    from mediamill.config.settings import get_settings
    from mediamill.pipeline.hashing import sha256_file
    from mediamill.pipeline.quality import resolve
    from mediamill.pipeline.transcode import plan_output, produce
    from mediamill.schemas.media import Asset
    from mediamill.schemas.renditions import LoudnessTarget, RenditionFormat, RenditionSpec
    from mediamill.workers.native import NativePool

    path = _existing_file(args.file)
    native = NativePool(1, test_crashes=get_settings().test_crashes).start()
    requested = RenditionSpec(
        format=RenditionFormat(args.format),
        bitrate_bps=args.bitrate,
        channels=args.channels,
        sample_rate_hz=args.sample_rate,
        loudness=LoudnessTarget(integrated_lufs=args.loudness, true_peak_dbtp=args.true_peak)
        if args.loudness is not None
        else None,
    )
    with native, _progress(_interactive(args), "analyse") as update:
        source = native.analyse(path, on_progress=lambda f: update(f, "analyse"))
        asset = Asset.from_analysis(*sha256_file(path), source)
        spec, notes = resolve(requested, asset, args.exact)
        settings_limit = 600 + 2 * (asset.duration_ms or 0) / 1000
        with tempfile.TemporaryDirectory(prefix="mediamill-transcode-") as tmp:
            out = plan_output(spec, Path(tmp) / f"out.{spec.format.extension}", source.loudness)
            (made,) = produce(
                path,
                [out],
                source.media,
                timeout_s=settings_limit,
                on_progress=lambda f: update(f, "transcode"),
                measure=lambda p: native.analyse(p, stage="transcode"),
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(made.output.path, args.output)
    sha, size = sha256_file(args.output)
    m, loud = made.measured.media, made.measured.loudness
    body = {
        "output": str(args.output),
        "spec": spec.to_json_dict(),
        "adjustments": notes,
        "codec": m.codec,
        "bitrate": m.bitrate_bps,
        "channels": m.channels,
        "sampleRate": m.sample_rate_hz,
        "duration": m.duration_ms,
        "sizeBytes": size,
        "sha256": sha,
        "lufs": loud.integrated_lufs,
        "truePeak": loud.true_peak_dbtp,
        "encodes": made.encodes,
    }
    if args.json:
        _emit_json(body)
    else:
        _print_asset_table(body, title="Rendition")
    return 0


def _existing_file(path: Path) -> Path:
    from mediamill.schemas.errors import InvalidRequestError

    if not path.is_file():
        raise InvalidRequestError(f"no such file: {path}")
    return path


def _runtime(*, in_process_queue: bool = False) -> Any:
    """The configured runtime. `in_process_queue` swaps the broker for an in-process
    one (DB and store stay as configured) so that `process` never takes, or
    leaves, work on a shared queue."""
    from mediamill.config.settings import get_settings
    from mediamill.workers.boot import build_runtime

    settings = get_settings()
    if in_process_queue and settings.broker_url is not None:
        settings = settings.model_copy(update={"broker_url": None})
    return build_runtime(settings)


def _wait_for_job(rt: Any, job_id: str, update: Callable[[float, str | None], None]) -> Any:
    from mediamill.storage import repo

    while True:
        with rt.db.session() as s:
            job = repo.load_job(s, job_id)
        update(job.progress, f"{job.stage.value}")
        if job.status.terminal:
            return job
        time.sleep(0.05)


def cmd_process(args: argparse.Namespace) -> int:
    """Ingest + analyse FILE through the queue with a worker in this process."""
    from mediamill.schemas.errors import error_from_name
    from mediamill.storage import repo
    from mediamill.workers.submit import submit_local_file
    from mediamill.workers.worker import InProcessWorker

    path = _existing_file(args.file)
    if not _valid_config():
        return EXIT_ERROR
    if logging.getLogger().level >= logging.WARNING:
        # This command says each failure itself, once, at the end; the workers' own
        # line for it is for the logs of a server (`--log-level INFO` shows it here).
        logging.getLogger("mediamill.workers.middleware").setLevel(logging.ERROR)
    rt = _runtime(in_process_queue=True)
    # No sweeper: this run does its own file only, never other queued jobs.
    with InProcessWorker(rt, sweep=False), _progress(_interactive(args), "process") as update:
        job_row = submit_local_file(rt, path, stage_in_store=False)
        job = _wait_for_job(rt, job_row.id, update)
    asset, renditions, packages = None, [], []
    if job.asset_id:
        with rt.db.session() as s:
            asset = repo.asset_from_row(s, repo.get_asset_row(s, job.asset_id))
            renditions = repo.list_renditions(s, job.asset_id)
            packages = repo.list_packages(s, job.asset_id)
    out = {
        "asset": asset.to_json_dict() if asset else None,
        "job": job.to_json_dict(),
        "renditions": [_signed_rendition(rt, r) for r in renditions],
        "packages": [_signed_package(rt, p) for p in packages],
    }
    if args.json:
        _emit_json(out)
    else:
        if out["asset"]:
            _print_asset_table(out["asset"])
        if out["renditions"]:
            _print_renditions_table(out["renditions"], args.wide)
        _print_jobs_table([out["job"], *out["job"]["children"]], args.wide, messages=False)
        _print_urls(rt.settings, out["renditions"], out["packages"])
    failures = _output_failures(out)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    if job.error and not any(line.endswith(f"{job.error.name}: {job.error.message}")
                             for line in failures):  # fmt: skip
        raise error_from_name(job.error.name, job.error.message)
    return EXIT_ERROR if failures or job.error else 0


def _output_failures(out: dict[str, Any]) -> list[str]:
    """One line per asked output that failed (a rendition, a package, a child job whose
    output is not listed), with its error's name and message."""
    lines = []

    def said(error: dict[str, Any] | None) -> str:
        error = error or {}
        return f"{error.get('name', 'Error')}: {error.get('message', 'failed')}"

    for r in out["renditions"]:
        if r["status"] == "failed":
            lines.append(f"rendition {_rendition_name(r)}: {said(r.get('error'))}")
    for package in out["packages"]:
        if package["status"] == "failed":
            lines.append(f"package {package['packageId']}: {said(package.get('error'))}")
    if not lines:
        for child in out["job"].get("children", []):
            if child["status"] == "failed":
                lines.append(f"{child['type']} job {child['id']}: {said(child.get('error'))}")
    return lines


def _print_urls(
    settings: Any, renditions: list[dict[str, Any]], packages: list[dict[str, Any]]
) -> None:
    """The signed URLs of what is ready, and where they open."""
    lines = [(_rendition_name(r), r["url"]) for r in renditions if r.get("url")]
    for package in packages:
        if package.get("hls"):
            lines += [("HLS", package["hls"]), ("DASH", package["dash"])]
    if not lines:
        return
    width = max(len(name) for name, _ in lines)
    for name, url in lines:
        print(f"{name:<{width}}  {url}")
    if settings.cdn_base_url is None and settings.serves_embedded_edge:
        print(
            "these URLs open while `mediamill serve` runs (its embedded edge, "
            f"{settings.resolved_cdn_base_url})"
        )
    else:
        print(f"these URLs open at the edge serving {settings.resolved_cdn_base_url}")


def _signed_rendition(rt: Any, rendition: Any) -> dict[str, Any]:
    """A rendition's JSON with its signed URL (`url`) when it is ready."""
    from mediamill.schemas.renditions import RenditionStatus
    from mediamill.workers.delivery import sign_file_url

    body = rendition.to_json_dict()
    if rendition.status is RenditionStatus.READY and rendition.storage_key:
        signed = sign_file_url(rt, rendition.storage_key)
        body["url"], body["expiresAt"] = signed.url, signed.expires_at_epoch_s
    return body


def _signed_package(rt: Any, package: Any) -> dict[str, Any]:
    """A package's JSON with signed HLS and DASH URLs when it is ready (and the
    signing mode can sign packages)."""
    from mediamill.schemas.packages import PackageStatus
    from mediamill.workers.delivery import sign_package_urls

    body = package.to_json_dict()
    if package.status is not PackageStatus.READY or rt.settings.signing_mode == "s3":
        return body
    urls = sign_package_urls(rt, package)
    body["hls"], body["dash"] = urls.hls.url, urls.dash.url
    body["expiresAt"] = urls.hls.expires_at_epoch_s
    return body


def cmd_ingest(args: argparse.Namespace) -> int:
    """Stage FILE in the shared store (or read in place on the embedded default) and enqueue."""
    from mediamill.storage import repo
    from mediamill.workers.submit import submit_local_file

    path = _existing_file(args.file)
    rt = _runtime()
    job_row = submit_local_file(rt, path, stage_in_store=not rt.settings.embedded)
    if args.json:
        with rt.db.session() as s:
            _emit_json(repo.load_job(s, job_row.id).to_json_dict())
    else:
        print(job_row.id)
    return 0


def _lower_priority(nice: int) -> None:
    """Lower this process's CPU priority by `nice` (MEDIAMILL_WORKER_NICE); native
    children it starts inherit it."""
    import os

    if nice > 0:
        try:
            os.nice(nice)
        except OSError as exc:  # a sandbox that refuses it: run at the priority we have
            logging.getLogger("mediamill.worker").warning("could not lower priority: %s", exc)


def cmd_worker(args: argparse.Namespace) -> int:
    """Consume the configured broker until SIGINT/SIGTERM."""
    from mediamill.workers.worker import InProcessWorker

    if args.log_level is None:
        logging.getLogger().setLevel(logging.INFO)
    if not _valid_config():
        return EXIT_ERROR
    rt = _runtime()
    _lower_priority(rt.settings.worker_nice)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with InProcessWorker(rt, threads=args.threads):
        logging.getLogger("mediamill.worker").info(
            "worker consuming %s", rt.settings.broker_url or "the embedded queue"
        )
        stop.wait()
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from mediamill.storage import repo

    rt = _runtime()
    with rt.db.session() as s:
        job = repo.load_job(s, args.id).to_json_dict()
    if args.json:
        _emit_json(job)
    else:
        _print_jobs_table([job, *job["children"]], args.wide)
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from mediamill.schemas.jobs import JobStatus
    from mediamill.storage import repo

    rt = _runtime()
    with rt.db.session() as s:
        jobs, cursor = repo.list_jobs(
            s,
            status=JobStatus(args.status) if args.status else None,
            limit=args.limit,
            cursor=args.cursor,
        )
    data = [j.to_json_dict() for j in jobs]
    if args.json:
        _emit_json({"data": data, "nextCursor": cursor})
    else:
        _print_jobs_table(data, args.wide)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from mediamill.config.settings import get_settings
    from mediamill.storage.db import database_for

    db = database_for(get_settings().resolved_database_url)
    db.upgrade()
    print("database is at the latest revision")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn; on the embedded default the app runs a worker too."""
    from mediamill.api.app import create_app
    from mediamill.api.server import serve
    from mediamill.config.settings import get_settings

    if not _valid_config():
        return EXIT_ERROR
    settings = get_settings()
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    if (host, port) != (settings.http_host, settings.http_port):
        # The embedded edge's URLs name the address the server really listens on.
        settings = settings.model_copy(update={"http_host": host, "http_port": port})
    serve(create_app(settings), settings, host, port)
    return 0


def _database() -> Any:
    from mediamill.config.settings import get_settings
    from mediamill.storage.db import database_for

    settings = get_settings()
    db = database_for(settings.resolved_database_url)
    if settings.database_url is None:
        db.ensure_schema()
    return db


def cmd_keys_create(args: argparse.Namespace) -> int:
    from mediamill.schemas.audit import CLI_ACTOR, AuditAction
    from mediamill.storage import audit
    from mediamill.storage.api_keys import create_api_key

    with _database().session() as s:
        key = create_api_key(s, args.scope, args.name)
        audit.record(
            s, CLI_ACTOR, AuditAction.API_KEY_CREATED, "apiKey", key.client_id,
            {"scope": key.scope, "name": args.name},
        )
    if args.quiet:
        print(key.api_key)
    elif args.json:
        _emit_json(
            {
                "clientId": key.client_id,
                "token": key.token,
                "apiKey": key.api_key,
                "scope": key.scope,
            }
        )
    else:
        print(f"clientId  {key.client_id}")
        print(f"token     {key.token}")
        print(f"apiKey    {key.api_key}")
        print(f"scope     {key.scope}")
        print("the token is shown only now; store it safely", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """The keys' client ids, scopes, names and dates; tokens are never stored."""
    from mediamill.storage.api_keys import list_api_keys

    with _database().session() as s:
        rows = [
            {
                "clientId": row.client_id,
                "scope": row.scope,
                "name": row.name,
                "created": row.created_at.isoformat(timespec="seconds"),
                "revoked": row.revoked_at.isoformat(timespec="seconds")
                if row.revoked_at
                else None,
            }
            for row in list_api_keys(s, include_revoked=args.all)
        ]
    if args.json:
        _emit_json({"data": rows})
        return 0
    from rich.console import Console
    from rich.table import Table

    # Fits 80 columns: the id whole, dates as days (the JSON has the times), the name
    # wrapped if it must.
    table = Table()
    table.add_column("client id", no_wrap=True)
    table.add_column("scope", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("created", no_wrap=True)
    if args.all:
        table.add_column("revoked", no_wrap=True)
    for key in rows:
        cells = [key["clientId"], key["scope"], key["name"] or "", key["created"][:10]]
        table.add_row(*cells, *([(key["revoked"] or "")[:10]] if args.all else []))
    Console().print(table)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from mediamill.schemas.audit import CLI_ACTOR, AuditAction
    from mediamill.schemas.errors import ModelNotFoundError
    from mediamill.storage import audit
    from mediamill.storage.api_keys import revoke_api_key

    with _database().session() as s:
        if not revoke_api_key(s, args.client_id):
            raise ModelNotFoundError(f"no live API key {args.client_id}")
        audit.record(s, CLI_ACTOR, AuditAction.API_KEY_REVOKED, "apiKey", args.client_id)
    print(f"revoked {args.client_id}")
    return 0


def cmd_assets_list(args: argparse.Namespace) -> int:
    from mediamill.cli_tables import ASSET_COLUMNS, asset_row, print_table
    from mediamill.schemas.media import AssetStatus
    from mediamill.storage.asset_admin import AssetKind, AssetSort, list_assets_page

    with _database().session() as s:
        assets, cursor = list_assets_page(
            s,
            status=AssetStatus(args.status) if args.status else None,
            kind=AssetKind(args.kind) if args.kind else None,
            sort=AssetSort.OLDEST if args.oldest_first else AssetSort.NEWEST,
            limit=args.limit,
            cursor=args.cursor,
        )
    data = [a.to_json_dict() for a in assets]
    if args.json:
        _emit_json({"data": data, "nextCursor": cursor})
        return 0
    print_table(ASSET_COLUMNS, [asset_row(a, args.wide) for a in data], wide=args.wide)
    if cursor:
        print(f"more: --cursor {cursor}")
    return 0


def cmd_assets_show(args: argparse.Namespace) -> int:
    from mediamill.workers.assets import asset_metadata

    with _database().session() as s:
        metadata = asset_metadata(s, args.asset_id).to_json_dict()
    if args.json:
        _emit_json(metadata)
        return 0
    renditions = metadata.pop("renditions", [])
    packages = metadata.pop("packages", [])
    _print_asset_table(metadata)
    if renditions:
        _print_renditions_table(renditions, args.wide)
    for package in packages:
        print(f"package {package['packageId']}  {package['status']}")
    return 0


def cmd_assets_delete(args: argparse.Namespace) -> int:
    from mediamill.schemas.audit import CLI_ACTOR
    from mediamill.workers.asset_admin import delete_asset

    asset = delete_asset(_runtime(), args.asset_id, CLI_ACTOR).to_json_dict()
    if args.json:
        _emit_json(asset)
    else:
        print(f"deleted {asset['originalAssetId']}: its original, renditions and packages")
    return 0


def cmd_webhooks_add(args: argparse.Namespace) -> int:
    from mediamill.config.settings import get_settings
    from mediamill.schemas.audit import CLI_ACTOR, AuditAction
    from mediamill.storage import audit
    from mediamill.workers import webhook_admin

    with _database().session() as s:
        created = webhook_admin.create_endpoint(
            s, get_settings(), url=args.url, events=args.events, description=args.description
        )
        audit.record(
            s, CLI_ACTOR, AuditAction.WEBHOOK_CREATED, "webhook", created.id,
            {"url": created.url, "events": list(created.events)},
        )
    if args.json:
        _emit_json(created.to_json_dict())
    else:
        print(f"id      {created.id}")
        print(f"url     {created.url}")
        print(f"events  {' '.join(created.events)}")
        print(f"secret  {created.secret}")
        print("the secret is shown only now; store it safely", file=sys.stderr)
    return 0


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    from mediamill.workers import webhook_admin

    with _database().session() as s:
        data, next_cursor = webhook_admin.list_endpoints(s, limit=args.limit, cursor=args.cursor)
    rows = [d.to_json_dict() for d in data]
    if args.json:
        _emit_json({"data": rows, "nextCursor": next_cursor})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "status", "url", "events", "secret", "last delivery", "description")
    for w in rows:
        table.add_row(
            w["id"],
            w["status"] + (f" ({w['disabledReason']})" if w["disabledReason"] else ""),
            w["url"],
            " ".join(w["events"]),
            "…" + w["secretHint"],
            w["lastDeliveryAt"] or "-",
            w["description"] or "",
        )
    Console().print(table)
    if next_cursor:
        print(f"next page: --cursor {next_cursor}", file=sys.stderr)
    return 0


def cmd_webhooks_deliveries(args: argparse.Namespace) -> int:
    from mediamill.workers import webhook_admin

    with _database().session() as s:
        data, next_cursor = webhook_admin.list_deliveries(
            s, args.id, status=args.status, limit=args.limit, cursor=args.cursor
        )
    rows = [d.to_json_dict() for d in data]
    if args.json:
        _emit_json({"data": rows, "nextCursor": next_cursor})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "event", "status", "attempts", "http", "ms", "next retry", "error")
    for d in rows:
        table.add_row(
            d["id"],
            d["eventType"],
            d["status"],
            str(d["attemptCount"]),
            str(d["httpStatus"] or "-"),
            str(d["durationMs"] if d["durationMs"] is not None else "-"),
            d["nextRetryAt"] or "-",
            d["error"] or "",
        )
    Console().print(table)
    if next_cursor:
        print(f"next page: --cursor {next_cursor}", file=sys.stderr)
    return 0


def cmd_webhooks_redeliver(args: argparse.Namespace) -> int:
    from mediamill.schemas.audit import CLI_ACTOR, AuditAction
    from mediamill.storage import audit
    from mediamill.workers import webhook_admin

    with _database().session() as s:
        delivery = webhook_admin.redeliver(s, args.id, args.delivery_id)
        audit.record(
            s, CLI_ACTOR, AuditAction.WEBHOOK_REDELIVERED, "webhook", args.id,
            {"deliveryId": args.delivery_id},
        )
    if args.json:
        _emit_json(delivery.to_json_dict())
    else:
        print(f"delivery {delivery.id} ({delivery.event_type}) queued again")
    return 0


def cmd_edge_nginx_conf(args: argparse.Namespace) -> int:
    """Print a complete nginx.conf serving the local store behind signed URLs.

    The state dir (pid, logs, temp files) is created here: nginx refuses to start
    without it, and it is how the printed file runs unprivileged.
    """
    from mediamill.config.edge import ApiProxy, render_api_proxy, render_nginx_conf
    from mediamill.config.settings import ConfigError, get_settings
    from mediamill.storage.blobs import LocalBlobStore, open_store

    settings = get_settings()
    api = None
    if args.api is not None:
        api = ApiProxy.from_settings(settings, args.api, args.api_listen)
    if args.api_only:
        if api is None:
            raise ConfigError("--api-only needs --api UPSTREAM")
        sys.stdout.write(render_api_proxy(api))
        return 0
    if args.root is not None:
        root = args.root.expanduser().resolve()
    else:
        store = open_store(settings)
        if not isinstance(store, LocalBlobStore):
            raise ConfigError(
                "the configured store is not a local directory: pass --root DIR, or put "
                "config/nginx/edge-minio.conf.template in front of S3/MinIO"
            )
        root = store.root
    if not root.is_dir():
        raise ConfigError(f"--root {root} is not a directory")
    state_dir = (args.state_dir or settings.resolved_data_dir / "edge").expanduser().resolve()
    conf = render_nginx_conf(
        listen=args.listen,
        root=root,
        secret=settings.resolved_signing_secret(),
        state_dir=state_dir,
        api=api,
        packages_prefix=keys.PACKAGES,
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.write(conf)
    return 0


def cmd_ingest_edge_logs(args: argparse.Namespace) -> int:
    """Each line once, however often a file is given: what the files held, and what the
    edge delivered to the sessions they name."""
    from mediamill.schemas.edge_logs import EdgeLogIngest
    from mediamill.schemas.errors import ConfigError
    from mediamill.workers.edge_logs import deliveries, ingest_lines

    rt = _runtime()
    total = EdgeLogIngest()
    seen: set[str] = set()
    for path in args.files:
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                total = total.add(ingest_lines(rt, f, seen))
        except OSError as exc:
            raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    delivered = [d.to_json_dict() for d in deliveries(rt, sorted(seen))]
    if args.json:
        _emit_json({**total.to_json_dict(), "deliveries": delivered})
        return 0
    print(
        f"{total.lines} lines: {total.segment_requests} segment requests of playback sessions "
        f"({total.new_requests} new), {total.unknown_sessions} of unknown sessions, "
        f"{total.unreadable_lines} unreadable"
    )
    for d in delivered:
        print(
            f"{d['sessionId']}  {d['rendition']}  {d['segments']} segments  {d['bytes']} bytes  "
            f"watched {d['watchedFromS']:g}-{d['watchedToS']:g} s"
        )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Print a signed URL for a file key, or the HLS and DASH URLs of a package.

    A package's default expiry covers its duration plus a margin, so the row is
    read for its duration (and an unknown package is refused).
    """
    from mediamill.config.settings import get_settings
    from mediamill.pipeline.signing import (
        CloudFrontUrlSigner,
        package_expires_in_s,
        signer_from_settings,
    )
    from mediamill.schemas.errors import InvalidRequestError

    if (args.key is None) == (args.package is None):
        raise InvalidRequestError("give either a KEY or --package ASSET_ID/PACKAGE_ID")
    settings = get_settings()
    signer = signer_from_settings(settings)
    if args.key is not None:
        expires_in_s = args.expires_in
        if expires_in_s is None:
            expires_in_s = settings.file_url_expires_s
        signed = signer.sign_file(args.key, expires_in_s)
        if args.json:
            _emit_json({"url": signed.url, "expiresAt": signed.expires_at_epoch_s})
        else:
            print(signed.url)
        return 0

    from mediamill.storage import repo

    asset_id, _, package_id = args.package.partition("/")
    if not asset_id or not package_id:
        raise InvalidRequestError(f"--package takes ASSET_ID/PACKAGE_ID, not {args.package!r}")
    rt = _runtime()
    with rt.db.session() as s:
        duration_ms = repo.get_package_row(s, asset_id, package_id).duration_ms
    expires_in_s = args.expires_in
    if expires_in_s is None:
        expires_in_s = package_expires_in_s(settings, duration_ms)
    now_s = time.time()  # one instant, so both URLs (and cookies) expire together
    hls = signer.sign_package(asset_id, package_id, expires_in_s, "master.m3u8", now_s=now_s)
    dash = signer.sign_package(asset_id, package_id, expires_in_s, "manifest.mpd", now_s=now_s)
    out: dict[str, Any] = {"hls": hls.url, "dash": dash.url, "expiresAt": hls.expires_at_epoch_s}
    if isinstance(signer, CloudFrontUrlSigner):
        signed_cookies = signer.signed_cookies(asset_id, package_id, expires_in_s, now_s=now_s)
        out["cookies"] = signed_cookies.cookies
        out["cookiePath"] = signed_cookies.path
    if args.json:
        _emit_json(out)
    else:
        print(f"hls  {hls.url}")
        print(f"dash {dash.url}")
        for name, value in out.get("cookies", {}).items():
            print(f"cookie {name}={value}")
    return 0


def cmd_listen_bucket(args: argparse.Namespace) -> int:
    """Follow MinIO's ListenBucketNotification stream for BUCKET and ingest each new
    object under MEDIAMILL_BUCKET_EVENTS_PREFIX exactly once, as the webhook route does.
    Runs until interrupted; a refused or failed notification is reported and skipped."""
    from mediamill.schemas.errors import InvalidRequestError, MediaMillError
    from mediamill.workers import bucket

    if not _valid_config():
        return EXIT_ERROR
    rt = _runtime()
    own_bucket, store_prefix = bucket.store_bucket(rt)
    if args.bucket != own_bucket:
        raise InvalidRequestError(
            f"bucket {args.bucket!r} is not the store's bucket {own_bucket!r}"
        )
    prefix = bucket.events_prefix(rt.settings)
    listen_prefix = f"{store_prefix}/{prefix}" if store_prefix else prefix
    events = bucket.minio_notifications(rt.settings, args.bucket, listen_prefix)
    for result in bucket.listen(rt, events):
        if isinstance(result, MediaMillError):
            _print_error(result.name, result.message)
        elif args.json:
            print(json.dumps(result.to_json_dict()), flush=True)
        else:
            detail = result.job_id or result.reason or ""
            print(f"{result.outcome:<9} {result.bucket}/{result.key}  {detail}", flush=True)
    return 0
