"""Country and device from what a request carries (pipeline/audience.py)."""

from __future__ import annotations

import pytest

from mediamill.pipeline.audience import country_of, device_info_of
from mediamill.schemas.analytics import DeviceClass

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/70.0.3538.102 Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
TIZEN_TV = (
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "76.0.3809.146/6.0 TV Safari/537.36"
)


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("8.8.8.8", "US"),
        ("81.2.69.142", "GB"),
        ("2001:4860:4860::8888", "US"),
        ("10.1.2.3", None),
        ("127.0.0.1", None),
        ("::1", None),
        ("not an address", None),
        ("", None),
        (None, None),
    ],
)
def test_country_of(address, country) -> None:
    assert country_of(address) == country


def test_ibm_example_user_agent_parses_to_its_device_info() -> None:
    info, kind = device_info_of(MAC_CHROME)
    assert info.model_dump() == {
        "browser": {"family": "Chrome", "major": "70", "minor": "0", "patch": "3538"},
        "os": {
            "family": "Mac OS X",
            "major": "10",
            "minor": "14",
            "patch": "1",
            "patch_minor": None,
        },
        "device": {"family": "Mac", "brand": "Apple", "model": "Mac"},
    }
    assert kind is DeviceClass.DESKTOP


@pytest.mark.parametrize(
    ("agent", "kind"),
    [
        (IPHONE, DeviceClass.MOBILE),
        (ANDROID_TABLET, DeviceClass.TABLET),
        (TIZEN_TV, DeviceClass.TV),
        ("curl/8.0", DeviceClass.OTHER),
        ("", DeviceClass.OTHER),
        (None, DeviceClass.OTHER),
    ],
)
def test_device_classes(agent, kind) -> None:
    assert device_info_of(agent)[1] is kind


def test_a_huge_user_agent_is_cut_not_a_slow_parse() -> None:
    info, _ = device_info_of("Mozilla/5.0 " + "(" * 100_000)
    assert info.browser.family  # parsed, whatever it made of it
