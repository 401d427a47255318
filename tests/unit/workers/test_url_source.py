"""URL ingest sources (workers/url_source.py): which addresses a URL may reach.

No network: literal and numeric hosts resolve locally, and named hosts go through a
monkeypatched resolver; the one redirect test answers from a fake connection.
"""

from __future__ import annotations

import socket

import pytest

from mediamill.schemas.errors import InvalidRequestError
from mediamill.workers import url_source
from mediamill.workers.url_source import address_allowed, check_source_url, open_source_url

# 169.254.169.254 (the cloud metadata endpoint) inside 6to4, and a public IPv4 inside it.
SIXTOFOUR_METADATA = "2002:a9fe:a9fe::1"
SIXTOFOUR_PUBLIC = "2002:5db8:d822::1"  # 93.184.216.34
# Teredo: server 65.54.227.120, client (obfuscated in the last 32 bits) 192.0.2.45 / 10.0.0.1.
TEREDO_DOC_CLIENT = "2001:0:4136:e378:8000:63bf:3fff:fdd2"
TEREDO_PRIVATE_CLIENT = "2001:0:4136:e378:8000:63bf:f5ff:fffe"
PUBLIC_V4 = "93.184.216.34"


def _fake_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> None:
    """getaddrinfo answering `answers` (host -> one address) and nothing else."""

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = answers[host]
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(url_source.socket, "getaddrinfo", getaddrinfo)


@pytest.mark.security
def test_6to4_and_teredo_are_judged_by_the_ipv4_they_embed() -> None:
    assert not address_allowed(SIXTOFOUR_METADATA)
    assert address_allowed(SIXTOFOUR_PUBLIC)
    assert not address_allowed("2002:7f00:1::1")  # 127.0.0.1
    assert not address_allowed("2002:a00:1::1")  # 10.0.0.1
    assert not address_allowed(TEREDO_DOC_CLIENT)
    assert not address_allowed(TEREDO_PRIVATE_CLIENT)
    assert not address_allowed("::ffff:169.254.169.254")
    assert address_allowed(PUBLIC_V4) and address_allowed("2606:4700:4700::1111")


@pytest.mark.security
def test_6to4_literal_and_host_resolving_to_it_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InvalidRequestError, match="non-public address"):
        check_source_url(f"http://[{SIXTOFOUR_METADATA}]/latest/meta-data", allow_private=False)
    _fake_resolver(monkeypatch, {"meta.example.com": SIXTOFOUR_METADATA})
    with pytest.raises(InvalidRequestError, match=f"non-public address \\({SIXTOFOUR_METADATA}"):
        check_source_url("http://meta.example.com/x.wav", allow_private=False)
    assert check_source_url("http://meta.example.com/x.wav", allow_private=True).host == (
        "meta.example.com"
    )


def test_teredo_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_resolver(monkeypatch, {"tunnel.example.com": TEREDO_PRIVATE_CLIENT})
    with pytest.raises(InvalidRequestError, match="non-public address"):
        check_source_url("http://tunnel.example.com/x.wav", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/x.wav",  # decimal 127.0.0.1
        "http://0x7f.1/x.wav",  # hex and short forms too
        "http://[::1]/x.wav",
        "http://[::ffff:7f00:1]/x.wav",
        "http://127.1/x.wav",
    ],
)
def test_numeric_loopback_forms_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError, match="non-public address"):
        check_source_url(url, allow_private=False)


class _Redirect:
    """A fake http.client response: a 302 to `location`."""

    status, reason = 302, "Found"

    def __init__(self, location: str) -> None:
        self.location = location

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.location if name.lower() == "location" else default


class _Connection:
    """A fake connection that answers every request with `response`."""

    def __init__(self, response: _Redirect) -> None:
        self.response = response

    def putrequest(self, *args: object, **kwargs: object) -> None: ...

    def putheader(self, *args: object) -> None: ...

    def endheaders(self) -> None: ...

    def getresponse(self) -> _Redirect:
        return self.response

    def close(self) -> None: ...


@pytest.mark.security
def test_a_redirect_to_a_private_address_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_resolver(
        monkeypatch, {"media.example.com": PUBLIC_V4, "internal.example.com": "10.0.0.7"}
    )
    connected: list[tuple[str, list[str]]] = []

    def connect(source: url_source.SourceUrl, addresses: list[str], timeout_s: float):
        connected.append((source.host, addresses))
        return _Connection(_Redirect("http://internal.example.com/secret.wav"))

    monkeypatch.setattr(url_source, "_connect", connect)
    with (
        pytest.raises(InvalidRequestError, match=r"internal\.example\.com .*\(10\.0\.0\.7\)"),
        open_source_url(
            "http://media.example.com/song.wav",
            allow_private=False,
            max_bytes=1000,
            timeout_s=5,
            read_timeout_s=5,
        ),
    ):
        pass
    assert connected == [("media.example.com", [PUBLIC_V4])]  # never the private host


def test_parse_allow_hosts_lower_cases_and_drops_blanks() -> None:
    """The allow list is the comma-separated host names, trimmed and lower-cased; an
    IPv6 address may be written with its URL brackets."""
    assert url_source.parse_allow_hosts(" LocalHost, hooks.Internal ,, ") == {
        "localhost",
        "hooks.internal",
    }
    assert url_source.parse_allow_hosts("[::1], 10.0.0.7") == {"::1", "10.0.0.7"}
    assert url_source.parse_allow_hosts("") == frozenset()


def test_the_allow_list_exempts_exactly_its_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """An allowed host may be private; its subdomains, its parent and its other names
    are not exempt (matched exactly, not as a suffix)."""
    _fake_resolver(
        monkeypatch,
        {
            "media.internal": "10.0.0.7",
            "cdn.media.internal": "10.0.0.8",
            "internal": "10.0.0.9",
            "10.0.0.7": "10.0.0.7",
        },
    )
    allowed = url_source.parse_allow_hosts("Media.Internal")
    source = check_source_url(
        "http://media.internal/a.wav", allow_private=False, allow_hosts=allowed
    )
    assert source.host == "media.internal"
    for url in ("http://cdn.media.internal/a.wav", "http://internal/a.wav", "http://10.0.0.7/"):
        with pytest.raises(InvalidRequestError, match="MEDIAMILL_URL_INGEST_ALLOW_HOSTS"):
            check_source_url(url, allow_private=False, allow_hosts=allowed)
