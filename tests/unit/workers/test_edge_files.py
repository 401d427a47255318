"""The embedded edge's use case: a signed path names one stored key, or the refusal
nginx answers with. Tokens are computed here as nginx's secure_link does, not by the
signer."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import time
from pathlib import Path

import pytest
from support import MakeRuntime

from mediamill.config.settings import Settings
from mediamill.schemas.errors import (
    BlobNotFoundError,
    PermissionDeniedError,
    SymlinkRefusedError,
    UrlExpiredError,
)
from mediamill.workers.edge_files import open_signed, signed_key

SECRET = "edge-unit-secret-0123456789"
ASSET = "a" * 64


def md5(text: str) -> str:
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def rt(make_runtime: MakeRuntime, tmp_path: Path):
    return make_runtime(Settings(_env_file=None, data_dir=tmp_path, signing_secret=SECRET))


def file_args(key: str, expires: int) -> tuple[str, str]:
    return md5(f"mediamill-file:{expires}/{key} {SECRET}"), str(expires)


def test_a_file_token_opens_its_key_and_its_bytes(rt) -> None:
    key = f"renditions/{ASSET}/mp3-128000-2ch.mp3"
    rt.store.put(key, io.BytesIO(b"mp3 bytes"))
    expires = int(time.time()) + 60
    assert signed_key(rt, key, *file_args(key, expires)) == key
    with open_signed(rt, key, *file_args(key, expires)) as obj:
        assert (obj.key, obj.size_bytes, obj.stream.read()) == (key, 9, b"mp3 bytes")


def test_wrong_missing_and_expired_tokens(rt) -> None:
    key = f"renditions/{ASSET}/x.mp3"
    expires = int(time.time()) + 60
    token, _ = file_args(key, expires)
    for md5_arg, expires_arg in (
        (None, str(expires)),
        (token, None),
        (token, str(expires + 1)),
        (token + "x", str(expires)),
        (file_args(f"renditions/{ASSET}/y.mp3", expires)[0], str(expires)),
        (token, f"+{expires}"),
    ):
        with pytest.raises(PermissionDeniedError) as caught:
            signed_key(rt, key, md5_arg, expires_arg)
        assert not isinstance(caught.value, UrlExpiredError)
    past = int(time.time()) - 1
    with pytest.raises(UrlExpiredError):
        signed_key(rt, key, *file_args(key, past))


def test_a_package_token_opens_every_file_under_its_prefix_only(rt) -> None:
    expires = int(time.time()) + 60
    prefix = f"packages/{ASSET}/pkg-1"
    token = md5(f"mediamill-package:{expires}/{prefix} {SECRET}")
    for name in ("master.m3u8", "seg-0-00001.m4s", "sub/init.mp4"):
        path = f"p/{token}/{expires}/{prefix}/{name}"
        assert signed_key(rt, path, None, None) == f"{prefix}/{name}"
    for path in (
        f"p/{token}/{expires}/packages/{ASSET}/pkg-2/master.m3u8",
        f"p/{token}/{expires}/packages/{'b' * 64}/pkg-1/master.m3u8",
        f"p/{token}/{expires}/{prefix}",
        f"p/{token}/{expires + 1}/{prefix}/master.m3u8",
        "p/garbage",
        "p",
    ):
        with pytest.raises(PermissionDeniedError):
            signed_key(rt, path, None, None)
    old = int(time.time()) - 5
    old_token = md5(f"mediamill-package:{old}/{prefix} {SECRET}")
    with pytest.raises(UrlExpiredError):
        signed_key(rt, f"p/{old_token}/{old}/{prefix}/master.m3u8", None, None)


def test_dot_paths_are_not_found_whatever_the_token(rt) -> None:
    expires = int(time.time()) + 60
    for key in (".tmp/x", f"renditions/{ASSET}/.hidden", "renditions/../originals/x", ".."):
        with pytest.raises(BlobNotFoundError):
            signed_key(rt, key, *file_args(key, expires))


def test_a_link_in_the_store_is_refused_and_a_directory_is_not_a_file(rt, tmp_path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    key = f"renditions/{ASSET}/link.mp3"
    link = rt.store.root / key
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    expires = int(time.time()) + 60
    with pytest.raises(SymlinkRefusedError), open_signed(rt, key, *file_args(key, expires)):
        pass
    directory = f"renditions/{ASSET}"
    with (
        pytest.raises(BlobNotFoundError),
        open_signed(rt, directory, *file_args(directory, expires)),
    ):
        pass


def test_other_signing_modes_serve_nothing(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    rt = make_runtime(
        Settings(_env_file=None, data_dir=tmp_path, signing_mode="s3", storage_url="s3://b")
    )
    key = f"renditions/{ASSET}/x.mp3"
    with pytest.raises(PermissionDeniedError):
        signed_key(rt, key, *file_args(key, int(time.time()) + 60))
