"""Fixtures of the standing attack suite: an embedded API per module (no worker, an
admin and a read key, bucket notifications on), and the integration suite's real S3
endpoint (moto's standalone server), so an attack on the bucket routes meets real HEADs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, running_api
from integration.conftest import moto_server  # noqa: F401 - a fixture, used by name


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The embedded API over a data dir of this module's own, with no worker."""
    from mediamill.config.settings import Settings

    data_dir = tmp_path_factory.mktemp("attack") / "data"
    settings = Settings(_env_file=None, data_dir=data_dir, bucket_events_token="t" * 20)
    with running_api(settings, run_worker=False) as running:
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is part of the attack suite (`-m security`)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.security)
