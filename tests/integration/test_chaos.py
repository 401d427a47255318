"""The crash test of issue 7: `scripts/chaos.py` on real Redis, PostgreSQL and the moto
S3 server, with two `mediamill worker` processes of which a random busy one is
SIGKILLed ten times (and restarted) while 50 mixed jobs run."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from support import _load_script

pytestmark = pytest.mark.integration

chaos = _load_script("chaos")

# A Redis database of this test's own: the run flushes it and reads dramatiq's keys.
CHAOS_REDIS_DB = 12


@pytest.fixture
def chaos_redis_url(redis_url: str) -> str:
    import redis

    url = urlunparse(urlparse(redis_url)._replace(path=f"/{CHAOS_REDIS_DB}"))
    redis.Redis.from_url(url).flushdb()
    return url


def test_killed_workers_lose_nothing(moto_server, chaos_redis_url: str, tmp_path: Path) -> None:
    from integration.conftest import distributed_env

    from mediamill.workers.boot import build_runtime

    opts = chaos.ChaosOptions(jobs=50, kills=10, workers=2, threads=2, seed=7, timeout_s=300)
    opts.work_dir = tmp_path / "chaos"
    with distributed_env(moto_server, chaos_redis_url, tmp_path / "data") as env:
        report = chaos.run(env, opts, say=print)
        chaos.print_report(report)
        assert report.ok, "\n".join(f"{c.name}: {c.detail}" for c in report.failures())
        assert [c.name for c in report.checks] == [
            "every job succeeded, one row each",
            "recorded sha256 and size = stored bytes",
            "packages complete",
            "no duplicate rows",
            "store holds exactly the named objects",
            "every event delivered at least once",
            "every kill hit a running job",
            "workers stopped cleanly",
        ]
        assert sum(1 for k in report.kills if k.jobs) == 10  # kills that cut a job short
        kinds = {p.kind for p in report.plans}
        assert kinds == {"analysis", "audio-renditions", "audio-package", "video-package"} | {
            "package",
            "duplicate",
        }

        # The checks are not vacuous: damage the store and they say so.
        rt = build_runtime(chaos.settings_for(chaos.chaos_env(env)))
        rendition_key = next(iter(rt.store.list("renditions/")))
        segment_key = next(k for k in rt.store.list("packages/") if k.endswith(".m4s"))
        with (tmp_path / "junk").open("wb+") as junk:
            junk.write(b"not the rendition")
            junk.seek(0)
            rt.store.put(rendition_key, junk)
        rt.store.delete(segment_key)
        rt.store.client.put_object(
            Bucket=rt.store.bucket, Key="originals/.incoming/left-over", Body=b"x"
        )
        failed = {
            c.name: c.detail for c in chaos.check_state(rt, report.plans, report.media) if not c.ok
        }
        assert set(failed) == {
            "recorded sha256 and size = stored bytes",
            "packages complete",
            "store holds exactly the named objects",
        }, failed
        assert rendition_key in failed["recorded sha256 and size = stored bytes"]
        assert "originals/.incoming/left-over" in failed["store holds exactly the named objects"]
        rt.broker.close()
