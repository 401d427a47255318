"""workers/runtime.py: the process's Runtime makes its native pool and its URL signer
once, on first use (a signer again when the settings object is replaced, or after a
ConfigError); `set_current` makes a runtime the one actors use and its broker
dramatiq's; `work_dir` gives each stage a fresh pid-named directory, removed after."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import dramatiq.broker
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dramatiq.brokers.stub import StubBroker

from mediamill.config.settings import ConfigError, Settings
from mediamill.pipeline.signing import NginxSigner
from mediamill.schemas import keys
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.blobs.s3 import S3BlobStore
from mediamill.storage.db import Database
from mediamill.workers import runtime
from mediamill.workers.runtime import Runtime, current, set_current, work_dir

SECRET = "runtime-test-secret-0123456789"
KEY = keys.original_key("ab" * 32)


@pytest.fixture
def rt(db: Database, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", signing_secret=SECRET, worker_threads=3
    )
    broker = StubBroker()
    made = Runtime(settings, db, LocalBlobStore(tmp_path / "store"), broker)
    yield made
    made.close_native()
    broker.close()


def test_current_needs_set_current_which_also_sets_dramatiqs_broker(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before set_current: RuntimeError; after: the runtime, and its broker is global."""
    monkeypatch.setattr(runtime, "_current", None)
    monkeypatch.setattr(dramatiq.broker, "global_broker", None)
    with pytest.raises(RuntimeError, match=r"no MediaMill runtime in this process"):
        current()
    set_current(rt)
    assert current() is rt
    assert dramatiq.get_broker() is rt.broker


def test_work_dir_is_fresh_named_after_this_process_and_removed_after(rt: Runtime) -> None:
    """Made under the (created) work dir, named `mediamill-<pid>-…`, removed with its files."""
    work = rt.settings.resolved_work_dir
    assert not work.exists()
    with work_dir(rt.settings) as first, work_dir(rt.settings) as second:
        assert first != second
        for made in (Path(first), Path(second)):
            assert made.parent == work and made.is_dir()
            assert made.name.startswith(f"mediamill-{os.getpid()}-")
        (Path(first) / "sub").mkdir()
        (Path(first) / "sub" / "out.m4a").write_bytes(b"x" * 100)
    assert work.is_dir() and list(work.iterdir()) == []


def test_native_pool_is_made_once_per_runtime_until_closed(rt: Runtime) -> None:
    """One pool of `resolved_worker_threads` for every thread; a new one after close."""
    pools = []
    threads = [threading.Thread(target=lambda: pools.append(rt.native())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(pool) for pool in pools}) == 1
    assert pools[0] is rt.native() and pools[0].size == 3
    rt.close_native()
    assert rt.native() is not pools[0]


def test_signer_is_kept_until_the_settings_are_replaced(rt: Runtime) -> None:
    """The same signer on every call; replaced settings make one that signs with them."""
    signer = rt.signer()
    assert isinstance(signer, NginxSigner) and rt.signer() is signer
    assert signer.sign_file(KEY, 60).url.startswith(f"http://127.0.0.1:8000/cdn/{KEY}?md5=")
    rt.settings = rt.settings.model_copy(update={"cdn_base_url": "https://cdn.example.com"})
    replaced = rt.signer()
    assert replaced is not signer
    assert replaced.sign_file(KEY, 60).url.startswith(f"https://cdn.example.com/{KEY}?md5=")


def test_signer_config_error_is_raised_then_retried_on_the_next_call(
    rt: Runtime, tmp_path: Path
) -> None:
    """A ConfigError is not cached: once the key file exists, the same settings sign."""
    key_file = tmp_path / "cloudfront.pem"
    rt.settings = rt.settings.model_copy(
        update={
            "signing_mode": "cloudfront",
            "cloudfront_key_pair_id": "K2JCJMDEHXQW5F",
            "cloudfront_private_key_file": key_file,
            "cdn_base_url": "https://d111.cloudfront.net",
        }
    )
    with pytest.raises(ConfigError, match="cannot read MEDIAMILL_CLOUDFRONT_PRIVATE_KEY_FILE"):
        rt.signer()
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    url = rt.signer().sign_file(KEY, 60).url
    assert url.startswith(f"https://d111.cloudfront.net/{KEY}?")
    assert "Key-Pair-Id=K2JCJMDEHXQW5F" in url


def test_s3_signer_presigns_with_the_stores_own_client(rt: Runtime) -> None:
    """Mode s3 uses the store's client: URLs name its endpoint, bucket and prefix."""
    rt.store = S3BlobStore(
        "media",
        "mm",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="test-key",
        secret_access_key="test-secret",
    )
    rt.settings = rt.settings.model_copy(
        update={"signing_mode": "s3", "storage_url": "s3://media/mm"}
    )
    signer = rt.signer()
    assert signer.client is rt.store.client
    url = signer.sign_file(KEY, 60).url
    assert url.startswith(f"http://127.0.0.1:9/media/mm/{KEY}?")
    assert "test-key" in url
