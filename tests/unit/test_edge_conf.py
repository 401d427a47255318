"""`config/edge.py` and `mediamill edge nginx-conf`: what is refused, where paths go.

A real nginx runs the output in tests/integration/test_edge_nginx.py; these check the
inputs the renderer must refuse before anything reaches a configuration file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support import ROOT

from mediamill.cli import main
from mediamill.config.edge import render_nginx_conf
from mediamill.config.settings import ConfigError, get_settings
from mediamill.schemas import keys

SECRET = "edge-unit-secret-0123456789"


def render(tmp_path: Path, **overrides: object) -> str:
    args: dict[str, object] = {
        "listen": "127.0.0.1:8080",
        "root": tmp_path / "store",
        "secret": SECRET,
        "state_dir": tmp_path / "state",
        "packages_prefix": keys.PACKAGES,
    }
    args.update(overrides)
    return render_nginx_conf(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "secret",
    [
        "has-a-dollar-$uri-inside",
        'has-a-double"quote-inside',
        "has-a-single'quote-inside",
        "has-a-semicolon;-inside",
        "has a space inside it ok",
        "has-a-tab\tinside-it-ok",
        "has-a-newline\ninside-it-ok",
        "has-braces-{inside}-it-ok",
        "has-a-backslash\\inside-ok",
        "has-non-ascii-s\u00e9cret-inside",
        "",
    ],
)
def test_secrets_nginx_cannot_hold_literally_are_refused(tmp_path: Path, secret: str) -> None:
    with pytest.raises(ConfigError):
        render(tmp_path, secret=secret)


def test_the_secret_is_in_both_checks(tmp_path: Path) -> None:
    secret = "Aa0-_.~!@#%^&*()+=[]|:,<>?/`x"
    conf = render(tmp_path, secret=secret)
    checks = re.findall(r'secure_link_md5 "([^"]*)";', conf)
    assert checks == [
        f"mediamill-package:$edge_expires/$edge_prefix {secret}",
        f"mediamill-session:$edge_expires/$edge_session/$edge_prefix {secret}",
        f"mediamill-file:$secure_link_expires$uri {secret}",
    ]


def test_the_minio_template_checks_the_same_token_domains(tmp_path: Path) -> None:
    """The template's two checks are the generated file's, with the secret's variable."""
    template = (ROOT / "config/nginx/edge-minio.conf.template").read_text()
    secret = "${MEDIAMILL_SIGNING_SECRET}"
    generated = re.findall(r'secure_link_md5 "([^"]*)";', render(tmp_path, secret="s3cret-s3cret"))
    assert re.findall(r'secure_link_md5 "([^"]*)";', template) == [
        check.replace("s3cret-s3cret", secret) for check in generated
    ]


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8443", "localhost:80", "*:8080"])
def test_host_port_listens_are_accepted(tmp_path: Path, listen: str) -> None:
    assert f"listen {listen};" in render(tmp_path, listen=listen)


@pytest.mark.parametrize(
    "listen",
    ["8080", "localhost", "localhost:", ":8080", "host:0", "host:65536", "a b:80", "h:80;", "-h:1"],
)
def test_other_listens_are_refused(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        render(tmp_path, listen=listen)


def test_paths_must_be_absolute_and_plain(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        render(tmp_path, root="relative/store")
    with pytest.raises(ConfigError, match="absolute"):
        render(tmp_path, state_dir="state")
    with pytest.raises(ConfigError, match="characters"):
        render(tmp_path, root=tmp_path / "my store")
    with pytest.raises(ConfigError, match="characters"):
        render(tmp_path, state_dir=tmp_path / "st;ate")


def test_root_is_resolved_and_everything_written_lives_in_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    conf = render(tmp_path, root=tmp_path / "link" / ".." / "real", state_dir=tmp_path / "st")
    real_root = (tmp_path / "real").resolve()
    assert re.findall(r"^\s*root (\S+);", conf, re.M) == [str(real_root)]
    state = str((tmp_path / "st").resolve())
    written = re.findall(r"^\s*(pid|error_log|access_log|\w+_temp_path) (\S+)", conf, re.M)
    names = {name for name, _ in written}
    assert {"pid", "error_log", "access_log"} <= names
    assert {f"{k}_temp_path" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")} <= names
    for name, path in written:
        assert path.startswith(state + "/"), name
    for directive in ("worker_processes", "events {", "http {", "server {"):
        assert re.search(rf"^\s*{re.escape(directive)}", conf, re.M), directive
    assert conf.count("{") == conf.count("}")


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in list(os.environ):
        if var.startswith("MEDIAMILL_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDIAMILL_SIGNING_SECRET", SECRET)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_defaults_to_the_local_store_and_the_data_dir(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["edge", "nginx-conf", "--listen", "127.0.0.1:9999"]) == 0
    conf = capsys.readouterr().out
    data = (cli_env / "data").resolve()
    assert f"root {data / 'store'};" in conf
    assert f"pid {data / 'edge'}/nginx.pid;" in conf
    assert "listen 127.0.0.1:9999;" in conf
    assert (data / "edge").is_dir()


def test_cli_refuses_a_store_that_is_not_local_or_a_missing_root(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["edge", "nginx-conf", "--root", str(cli_env / "nowhere")]) == 1
    assert "error: ConfigError: --root" in capsys.readouterr().err
    monkeypatch.setenv("MEDIAMILL_STORAGE_URL", "s3://bucket")
    get_settings.cache_clear()
    assert main(["edge", "nginx-conf"]) == 1
    err = capsys.readouterr().err
    assert "error: ConfigError:" in err and "edge-minio.conf.template" in err
    monkeypatch.setenv("MEDIAMILL_SIGNING_SECRET", "a-secret-with-a-$dollar")
    get_settings.cache_clear()
    assert main(["edge", "nginx-conf", "--root", str(cli_env)]) == 1
    assert "'$'" in capsys.readouterr().err


def test_both_edges_write_the_same_json_access_log(tmp_path: Path) -> None:
    from mediamill.config.edge import ACCESS_LOG_FORMAT, ACCESS_LOG_NAME

    conf = render(tmp_path)
    assert f"access_log {tmp_path}" in conf and f"/{ACCESS_LOG_NAME} mediamill_json;" in conf
    flat = " ".join(ACCESS_LOG_FORMAT.split())
    assert flat in " ".join(conf.split())
    template = (ROOT / "config/nginx/edge-minio.conf.template").read_text()
    assert flat in " ".join(template.split())
    assert "access.json.log mediamill_json;" in template
