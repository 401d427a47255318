"""docker-compose.yml cannot be run here (no Docker engine), so it is checked against
the repository: every service, command, setting, mounted file and dependency it
names must exist, long-running services have healthchecks, and workers can scale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mediamill.cli import _parser
from mediamill.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {"migrate", "minio-setup"}


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_the_stack_has_every_service_the_design_names() -> None:
    assert {"redis", "postgres", "minio", "api", "worker", "edge", "migrate"} <= set(SERVICES)
    assert "--appendonly" in SERVICES["redis"]["command"], "Redis keeps the queue on disk"
    for name, service in SERVICES.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_workers_scale_and_migrations_run_once_before_them() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker
    for name in ("api", "worker"):
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert SERVICES["migrate"]["command"] == ["mediamill", "db", "upgrade"]


def test_every_mediamill_command_exists() -> None:
    parser = _parser()
    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "mediamill":
            args = parser.parse_args(command[1:])
            assert callable(getattr(args, "func", None)), (name, command)
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_setting_named_exists(name: str) -> None:
    fields = set(Settings.model_fields)
    for var in _env(SERVICES[name]):
        if var.startswith("MEDIAMILL_") and name != "edge":  # edge: template placeholders
            assert var[len("MEDIAMILL_") :].lower() in fields, (name, var)


def test_every_mounted_file_exists_and_the_edge_template_uses_only_given_variables() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
    template = (ROOT / "config/nginx/edge-minio.conf.template").read_text()
    used = set(re.findall(r"\$\{(MEDIAMILL_[A-Z0-9_]+)\}", template))
    assert used and used <= set(_env(SERVICES["edge"])), used


def test_the_api_is_reached_only_through_the_edge_with_the_generated_proxy() -> None:
    """The edge publishes :8000 with the API proxy `mediamill edge nginx-conf --api
    api:8000 --api-only` prints for the default settings (the file is that output:
    regenerate it when either changes); the API publishes no port of its own."""
    from mediamill.config.edge import ApiProxy, render_api_proxy

    assert "ports" not in SERVICES["api"]
    assert "8000:8000" in SERVICES["edge"]["ports"]
    assert "./config/nginx/api-proxy.conf:/etc/nginx/conf.d/api-proxy.conf:ro" in (
        SERVICES["edge"]["volumes"]
    )
    expected = render_api_proxy(ApiProxy.from_settings(Settings(_env_file=None), "api:8000"))
    assert (ROOT / "config/nginx/api-proxy.conf").read_text() == expected
    assert SERVICES["edge"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_minio_notifies_the_api_with_the_bearer_token_the_api_expects() -> None:
    minio = _env(SERVICES["minio"])
    assert minio["MINIO_NOTIFY_WEBHOOK_ENABLE_MEDIAMILL"] == "on"
    assert minio["MINIO_NOTIFY_WEBHOOK_ENDPOINT_MEDIAMILL"] == "http://api:8000/v0/events/storage"
    api_env = COMPOSE["x-mediamill-env"]
    assert (
        minio["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_MEDIAMILL"]
        == api_env["MEDIAMILL_BUCKET_EVENTS_TOKEN"]
    )
    setup = " ".join(SERVICES["minio-setup"]["command"])
    assert "arn:minio:sqs::MEDIAMILL:webhook" in setup and "--prefix inbox/" in setup
    assert Settings().bucket_events_prefix == "inbox/"


def test_the_bucket_is_created_at_start_and_minio_is_reachable_only_inside_the_stack() -> None:
    setup = " ".join(SERVICES["minio-setup"]["command"])
    bucket = COMPOSE["x-mediamill-env"]["MEDIAMILL_STORAGE_URL"].removeprefix("s3://")
    assert f"mc mb --ignore-existing local/{bucket}" in setup
    # renditions/ and packages/ are anonymously readable for the edge: a published MinIO
    # port would serve them without a signature.
    assert "anonymous set download" in setup
    assert "ports" not in SERVICES["minio"]
    assert SERVICES["edge"]["depends_on"]["minio-setup"]["condition"] == (
        "service_completed_successfully"
    )


def test_the_readme_explains_how_to_run_the_stack() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run the distributed stack", 1)[1].split("\n## ", 1)[0]
    assert "docker compose up" in section and "--scale worker=" in section


def test_the_api_sees_players_addresses_through_the_edge() -> None:
    """The playback rate limit is per client address: behind the edge it must be the
    player's, which uvicorn takes from X-Forwarded-For of the proxies it trusts."""
    env = _env(SERVICES["api"])
    assert env["FORWARDED_ALLOW_IPS"] == "*"
    assert "MEDIAMILL_BROKER_URL" in env  # the shared settings still merged
    proxy = (ROOT / "config/nginx/api-proxy.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in proxy
