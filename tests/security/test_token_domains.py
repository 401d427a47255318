"""Issue 15 item 2: each signed-URL form signs its own domain, so a token made for
one form opens nothing of another's, on a real nginx running the configuration
`mediamill edge nginx-conf` prints. Tokens are forged here the way nginx's
secure_link documentation computes them, independently of the signer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from edge_support import Edge, fetch, local_edge, md5_token

from mediamill.pipeline.signing import NginxSigner

pytestmark = pytest.mark.integration

SECRET = "token-domain-secret-0123456789"
ASSET = "a" * 64
PACKAGE = "pkg-0123456789abcdef"
PREFIX = f"packages/{ASSET}/{PACKAGE}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """The edge over a store holding a file at a package's prefix key (`packages/A/P`,
    the key a package token used to open) and a manifest inside that package."""
    with local_edge(tmp_path_factory.mktemp("edge"), SECRET) as running:
        yield running


def _file(edge: Edge, key: str, token: str, expires: int) -> int:
    return fetch(f"{edge.base_url}/{key}?md5={token}&expires={expires}").status


def _package(edge: Edge, token: str, expires: int, prefix: str, name: str) -> int:
    return fetch(f"{edge.base_url}/p/{token}/{expires}/{prefix}/{name}").status


def test_each_form_opens_its_own_url(edge: Edge) -> None:
    edge.put(f"{PREFIX}/master.m3u8", b"#EXTM3U\n")
    edge.put("renditions/x/a.mp3", os.urandom(100))
    assert fetch(edge.signer.sign_package(ASSET, PACKAGE, 300).url).status == 200
    assert fetch(edge.signer.sign_file("renditions/x/a.mp3", 300).url).status == 200


def test_a_package_token_is_not_a_file_token_for_the_package_key(edge: Edge) -> None:
    """A file stored at `packages/A2/P2` (legal for S3, where keys are not folders):
    the token of package A2/P2 does not open it as a file."""
    asset, package = "b" * 64, "pkg-fedcba9876543210"
    edge.put(f"packages/{asset}/{package}", b"a file at the package's prefix")
    expires = int(time.time()) + 300
    package_token = edge.signer.package_token(asset, package, expires)
    assert _file(edge, f"packages/{asset}/{package}", package_token, expires) == 403
    forged = md5_token(f"mediamill-package:{expires}/packages/{asset}/{package} {SECRET}")
    assert forged == package_token
    assert _file(edge, f"packages/{asset}/{package}", forged, expires) == 403
    file_token = md5_token(f"mediamill-file:{expires}/packages/{asset}/{package} {SECRET}")
    assert _file(edge, f"packages/{asset}/{package}", file_token, expires) == 200


def test_a_file_token_for_the_package_key_does_not_open_the_package(edge: Edge) -> None:
    edge.put(f"{PREFIX}/master.m3u8", b"#EXTM3U\n")
    expires = int(time.time()) + 300
    file_token = edge.signer.file_token(PREFIX, expires)
    assert _package(edge, file_token, expires, PREFIX, "master.m3u8") == 403
    forged = md5_token(f"mediamill-file:{expires}/{PREFIX} {SECRET}")
    assert _package(edge, forged, expires, PREFIX, "master.m3u8") == 403


def test_tokens_of_the_old_undomained_form_open_nothing(edge: Edge) -> None:
    """URLs signed before the domains ("{expires}/{path} {secret}") stop working."""
    edge.put(f"{PREFIX}/master.m3u8", b"#EXTM3U\n")
    edge.put("renditions/x/old.mp3", os.urandom(100))
    expires = int(time.time()) + 300
    old_package = md5_token(f"{expires}/{PREFIX} {SECRET}")
    old_file = md5_token(f"{expires}/renditions/x/old.mp3 {SECRET}")
    assert _package(edge, old_package, expires, PREFIX, "master.m3u8") == 403
    assert _file(edge, "renditions/x/old.mp3", old_file, expires) == 403


def test_a_token_of_another_domain_label_or_secret_opens_nothing(edge: Edge) -> None:
    edge.put(f"{PREFIX}/master.m3u8", b"#EXTM3U\n")
    edge.put("renditions/x/b.mp3", os.urandom(100))
    expires = int(time.time()) + 300
    for label in ("mediamill-session", "mediamill-files", "MEDIAMILL-FILE", ""):
        token = md5_token(f"{label}:{expires}/renditions/x/b.mp3 {SECRET}")
        assert _file(edge, "renditions/x/b.mp3", token, expires) == 403, label
    other = md5_token(f"mediamill-file:{expires}/renditions/x/b.mp3 another-secret-0123456789")
    assert _file(edge, "renditions/x/b.mp3", other, expires) == 403


def test_the_signer_gives_one_path_a_different_token_in_each_domain() -> None:
    signer = NginxSigner("https://cdn.example.com", SECRET)
    assert signer.file_token(PREFIX, 1000) != signer.package_token(ASSET, PACKAGE, 1000)
