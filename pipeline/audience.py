"""Who is watching, as far as analytics may know: the country of a client address and
the parsed user agent. Both are resolved once, when a playback session starts; the
address and the user-agent string are then dropped (docs/analytics.md, Privacy).

Countries come from iptocc (the five RIRs' allocation data, shipped in its wheel: no
file to download, no lookup leaves the machine); it names the country a block was
assigned to, which agrees with commercial databases for about 95% of IPv4 addresses.
User agents are parsed by ua-parser (uap-core's regexes), whose result has IBM's
DeviceInfo shape.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import iptocc
from ua_parser import parse as parse_user_agent

from mediamill.schemas.analytics import Browser, Device, DeviceClass, DeviceInfo, Os

# Longer strings are cut before parsing: no real user agent is this long, and the
# regexes' time grows with the input.
MAX_USER_AGENT_CHARS = 512
_TV_WORDS = ("smart-tv", "smarttv", "tizen", "webos", "appletv", "roku", "bravia", "crkey")
_TV_FAMILIES = {"Roku", "Chromecast", "Apple TV"}
_TABLET_FAMILIES = {"iPad", "Kindle", "Generic Tablet"}
_MOBILE_OS = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "HarmonyOS"}
_DESKTOP_OS = {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Chrome OS", "FreeBSD"}


def country_of(address: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code of the country `address` was allocated to, or None
    (private, reserved, malformed or unallocated)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if not ip.is_global:
        return None
    code = iptocc.country_code(str(ip))
    return code.upper() if isinstance(code, str) and len(code) == 2 else None


@lru_cache(maxsize=4096)
def device_info_of(user_agent: str | None) -> tuple[DeviceInfo, DeviceClass]:
    """The parsed user agent and the class of its device. Cached: a site's visitors
    share a few hundred strings, and a parse costs about half a millisecond."""
    if not user_agent:
        return DeviceInfo(), DeviceClass.OTHER
    text = user_agent[:MAX_USER_AGENT_CHARS]
    result = parse_user_agent(text)
    ua, os, device = result.user_agent, result.os, result.device
    info = DeviceInfo(
        browser=Browser(family=ua.family, major=ua.major, minor=ua.minor, patch=ua.patch)
        if ua
        else Browser(),
        os=Os(
            family=os.family,
            major=os.major,
            minor=os.minor,
            patch=os.patch,
            patch_minor=os.patch_minor,
        )
        if os
        else Os(),
        device=Device(family=device.family, brand=device.brand, model=device.model)
        if device
        else Device(),
    )
    return info, _device_class(info, text)


def _device_class(info: DeviceInfo, user_agent: str) -> DeviceClass:
    lowered = user_agent.lower()
    if info.device.family in _TV_FAMILIES or any(word in lowered for word in _TV_WORDS):
        return DeviceClass.TV
    if info.device.family in _TABLET_FAMILIES or "tablet" in lowered:
        return DeviceClass.TABLET
    if info.os.family == "Android" and "mobile" not in lowered:
        return DeviceClass.TABLET  # Android's convention: phones say "Mobile", tablets don't
    if info.os.family in _MOBILE_OS or info.device.family in {"iPhone", "iPod"}:
        return DeviceClass.MOBILE
    if info.os.family in _DESKTOP_OS:
        return DeviceClass.DESKTOP
    return DeviceClass.OTHER
