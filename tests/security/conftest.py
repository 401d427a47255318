"""Fixtures of the standing attack suite: the integration suite's real S3 endpoint
(moto's standalone server), so an attack on the bucket routes meets real HEADs."""

from __future__ import annotations

from integration.conftest import moto_server  # noqa: F401 - a fixture, used by name
