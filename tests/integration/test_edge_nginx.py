"""The nginx edge for real: `mediamill edge nginx-conf` run by nginx over a local store.

nginx checks the URLs `NginxSigner` makes: files and whole packages are served
byte for byte with browser-friendly headers, and a missing, tampered or expired
token, a dot path or a path out of the store is refused. The docker-compose
variant (`config/nginx/edge-minio.conf.template`) runs the same checks in front
of a real S3 endpoint (moto), as the nginx image's envsubst step would render it.

Security checks compute tokens here, independently of the signer, so a signer
bug cannot hide an edge bug. With CI=true a missing nginx fails; elsewhere it skips.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import m3u8
import pytest
from edge_support import (
    Edge,
    Response,
    assert_cors,
    embedded_edge,
    fetch,
    free_port,
    local_edge,
    make_package_tree,
    md5_token,
    nginx_binary,
    raw_get,
    running_nginx,
)
from mpegdash.parser import MPEGDASHParser
from support import ROOT, slowloris, tamper

from mediamill.pipeline.ffmpeg import ffmpeg_binary
from mediamill.pipeline.signing import NginxSigner
from mediamill.storage.blobs import LocalBlobStore

pytestmark = pytest.mark.integration

SECRET = "edge-test-secret-0123456789"
# What each extension must be served as (issue 4), written out independently of
# config/edge.py.
EXPECTED_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "mpd": "application/dash+xml",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
}
REFUSED = {400, 403, 404}


# ---- tokens, computed the way nginx's secure_link documentation does ------------------------


def file_query(key: str, expires: int, secret: str = SECRET) -> str:
    return f"md5={md5_token(f'mediamill-file:{expires}/{key} {secret}')}&expires={expires}"


def package_path(asset_id: str, package_id: str, expires: int, secret: str = SECRET) -> str:
    prefix = f"packages/{asset_id}/{package_id}"
    token = md5_token(f"mediamill-package:{expires}/{prefix} {secret}")
    return f"/p/{token}/{expires}/{prefix}"


def session_path(
    asset_id: str, package_id: str, session_id: str, expires: int, secret: str = SECRET
) -> str:
    prefix = f"packages/{asset_id}/{package_id}"
    token = md5_token(f"mediamill-session:{expires}/{session_id}/{prefix} {secret}")
    return f"/s/{token}/{expires}/{session_id}/{prefix}"


def max_age_s(resp: Response) -> int:
    match = re.search(r"max-age=(\d+)", resp.headers.get("Cache-Control") or "")
    assert match, f"no max-age in Cache-Control: {resp.headers.get('Cache-Control')!r}"
    return int(match.group(1))


@pytest.fixture(scope="module", params=["nginx", "embedded"])
def edge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    """nginx on a free port with the configuration `mediamill edge nginx-conf` prints,
    and the edge `mediamill serve` embeds: every check here holds for both."""
    run = local_edge if request.param == "nginx" else embedded_edge
    with run(tmp_path_factory.mktemp(f"edge-{request.param}"), SECRET) as running:
        yield running


# ---- a package tree -------------------------------------------------------------------------


# ---- following the manifests ----------------------------------------------------------------


def hls_references(master_url: str) -> dict[str, set[str]]:
    """Every URI a player reaches from the master playlist, absolute, by kind."""
    master = m3u8.loads(fetch(master_url).body.decode(), uri=master_url)
    found: dict[str, set[str]] = {"playlists": set(), "init": set(), "segments": set()}
    found["playlists"] |= {p.absolute_uri for p in master.playlists}
    found["playlists"] |= {m.absolute_uri for m in master.media if m.uri}
    found["playlists"] |= {p.absolute_uri for p in master.iframe_playlists}
    for url in sorted(found["playlists"]):
        resp = fetch(url)
        assert resp.status == 200, url
        media = m3u8.loads(resp.body.decode(), uri=url)
        found["init"] |= {s.absolute_uri for s in media.segment_map if s.uri}
        for segment in media.segments:
            found["segments"].add(segment.absolute_uri)
            if segment.init_section is not None and segment.init_section.uri:
                found["init"].add(segment.init_section.absolute_uri)
    return found


def _iso_duration_s(text: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", text or "")
    assert match, f"unsupported duration {text!r}"
    h, m, s = match.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def _fill(template: str, rep_id: str, bandwidth: int, number: int = 0, time_: int = 0) -> str:
    def sub(match: re.Match[str]) -> str:
        name, width = match.group(1), match.group(2)
        if not name:
            return "$"
        value = {"RepresentationID": rep_id, "Bandwidth": bandwidth, "Number": number}.get(
            name, time_
        )
        return f"{int(value):0{int(width)}d}" if width else str(value)

    return re.sub(r"\$(RepresentationID|Number|Bandwidth|Time|)(?:%0(\d+)d)?\$", sub, template)


def _template_uris(chain: list, rep: object, base: str, period_s: float) -> set[str]:
    """The init and media URIs of one representation addressed by a SegmentTemplate.

    `chain` is the nearest template first (Representation, AdaptationSet, Period):
    an attribute missing on one level is inherited from the next.
    """

    def pick(attr: str) -> object:
        return next((getattr(t, attr) for t in chain if getattr(t, attr)), None)

    def fill(template: object, number: int = 0, time_: int = 0) -> str:
        return urljoin(base, _fill(str(template), rep.id, rep.bandwidth, number, time_))

    timescale, start = int(pick("timescale") or 1), int(pick("start_number") or 1)
    found = {fill(pick("initialization"))} if pick("initialization") else set()
    media, timelines = pick("media"), pick("segment_timelines")
    assert media, f"representation {rep.id}: a SegmentTemplate without @media"
    if not timelines:
        count = math.ceil(period_s * timescale / int(pick("duration")))
        return found | {fill(media, number) for number in range(start, start + count)}
    t, number = 0, start
    for s in timelines[0].Ss:
        t = s.t if s.t is not None else t
        repeat = s.r or 0
        if repeat < 0:  # up to the end of the period
            repeat = math.ceil((period_s * timescale - t) / s.d) - 1
        for _ in range(repeat + 1):
            found.add(fill(media, number, t))
            t, number = t + s.d, number + 1
    return found


def dash_references(mpd_url: str) -> set[str]:
    """Every init and media segment URI of a static MPD, absolute.

    Covers BaseURL at every level, SegmentTemplate (inherited; `$Number$` with
    `@duration`, or a SegmentTimeline for `$Time$`/`$Number$`), SegmentList and
    single-file representations. Anything else fails loudly.
    """
    mpd = MPEGDASHParser.parse(fetch(mpd_url).body.decode())

    def based(url: str, node: object) -> str:
        urls = getattr(node, "base_urls", None)
        return urljoin(url, urls[0].base_url_value) if urls else url

    total_s = _iso_duration_s(mpd.media_presentation_duration)
    found: set[str] = set()
    base_mpd = based(mpd_url, mpd)
    for period in mpd.periods:
        base_period = based(base_mpd, period)
        period_s = _iso_duration_s(period.duration) if period.duration else total_s
        for aset in period.adaptation_sets:
            base_aset = based(base_period, aset)
            for rep in aset.representations:
                base = based(base_aset, rep)
                chain = [n.segment_templates[0] for n in (rep, aset, period) if n.segment_templates]
                lists = rep.segment_lists or aset.segment_lists
                if chain:
                    found |= _template_uris(chain, rep, base, period_s)
                elif lists:
                    found |= {urljoin(base, i.source_url) for i in lists[0].initializations or []}
                    found |= {urljoin(base, u.media) for u in lists[0].segment_urls if u.media}
                else:
                    assert rep.base_urls, f"representation {rep.id}: no segment addressing"
                    found.add(base)
    return found


# ---- the file form --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(EXPECTED_TYPES))
def test_a_signed_file_is_served_whole_with_its_type_and_cors(edge: Edge, ext: str) -> None:
    key = f"renditions/{uuid.uuid4().hex}/spec.{ext}"
    data = edge.put(key, os.urandom(5000))
    resp = fetch(edge.signer.sign_file(key, 300).url)
    assert resp.status == 200
    assert resp.body == data
    assert resp.content_type == EXPECTED_TYPES[ext]
    assert resp.headers.get("Content-Length") == str(len(data))
    assert_cors(resp)
    if ext in {"m3u8", "mpd"}:
        assert max_age_s(resp) <= 60
    else:
        assert max_age_s(resp) >= 3600


def test_ranges_and_head_work_for_players(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/aac-128000-2.m4a"
    data = edge.put(key, os.urandom(4096))
    url = edge.signer.sign_file(key, 300).url
    part = fetch(url, headers={"Range": "bytes=100-199"})
    assert part.status == 206
    assert part.body == data[100:200]
    assert part.headers.get("Content-Range") == f"bytes 100-199/{len(data)}"
    assert_cors(part)
    head = fetch(url, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers.get("Content-Length") == str(len(data))


def test_suffix_and_open_ranges_and_unsatisfiable_ones(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/opus-96000-2.opus"
    data = edge.put(key, os.urandom(3000))
    url = edge.signer.sign_file(key, 300).url
    tail = fetch(url, headers={"Range": "bytes=-100"})
    assert (tail.status, tail.body) == (206, data[-100:])
    assert tail.headers.get("Content-Range") == "bytes 2900-2999/3000"
    rest = fetch(url, headers={"Range": "bytes=2500-"})
    assert (rest.status, rest.body) == (206, data[2500:])
    past = fetch(url, headers={"Range": "bytes=3000-3100"})
    assert past.status == 416
    assert past.headers.get("Content-Range") == "bytes */3000"


def test_preflight_is_answered_204(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/mp3-128000-2.mp3"
    edge.put(key, b"ID3" + os.urandom(100))
    resp = fetch(
        edge.signer.sign_file(key, 300).url,
        method="OPTIONS",
        headers={
            "Origin": "https://player.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert resp.status == 204
    assert resp.body == b""
    assert resp.headers.get("Access-Control-Allow-Origin") == "*"
    assert {"get", "head", "options"} <= resp.header_set("Access-Control-Allow-Methods")
    assert "range" in resp.header_set("Access-Control-Allow-Headers")


def test_other_methods_are_refused(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/x.mp3"
    edge.put(key, b"data")
    assert fetch(edge.signer.sign_file(key, 300).url, method="DELETE").status == 405


@pytest.mark.security
def test_a_tampered_file_token_is_403(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/mp3-128000-2.mp3"
    other = f"renditions/{uuid.uuid4().hex}/mp3-128000-2.mp3"
    data = edge.put(key, os.urandom(1000))
    edge.put(other, os.urandom(1000))
    expires = int(time.time()) + 300
    token = md5_token(f"mediamill-file:{expires}/{key} {SECRET}")
    assert fetch(f"{edge.base_url}/{key}?{file_query(key, expires)}").body == data
    for query in (
        f"md5={tamper(token)}&expires={expires}",
        f"md5={token}&expires={expires + 1}",  # a later expiry under the same token
        file_query(other, expires),  # another key's token
        file_query(key, expires, secret="not-the-secret-at-all"),
        f"md5={token}x&expires={expires}",
    ):
        resp = fetch(f"{edge.base_url}/{key}?{query}")
        assert resp.status == 403, query
        assert resp.body != data
        assert_cors(resp)  # `always`: a browser player can read the refusal


def test_a_missing_token_is_403(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/x.flac"
    data = edge.put(key, os.urandom(1000))
    expires = int(time.time()) + 300
    token = md5_token(f"mediamill-file:{expires}/{key} {SECRET}")
    for query in ("", "?", f"?md5={token}", f"?expires={expires}", f"?md5=&expires={expires}"):
        resp = fetch(f"{edge.base_url}/{key}{query}")
        assert resp.status == 403, query
        assert resp.body != data


def test_an_expired_file_url_is_410(edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/x.opus"
    data = edge.put(key, os.urandom(1000))
    resp = fetch(edge.signer.sign_file(key, 60, now_s=time.time() - 3600).url)
    assert resp.status == 410
    assert resp.body != data
    assert_cors(resp)


@pytest.mark.security
def test_in_flight_writes_and_dot_paths_are_never_served(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    inflight = edge.store.root / ".tmp" / uuid.uuid4().hex
    inflight.write_bytes(b"partial write")
    hidden_key = f"renditions/{uuid.uuid4().hex}/.hidden.mp3"
    hidden = edge.store.root / hidden_key
    hidden.parent.mkdir(parents=True)
    hidden.write_bytes(b"not a key")
    expires = int(time.time()) + 300
    for key in (f".tmp/{inflight.name}", hidden_key):
        resp = fetch(f"{edge.base_url}/{key}?{file_query(key, expires)}")
        assert resp.status == 404, key
        assert resp.body not in {b"partial write", b"not a key"}


@pytest.mark.security
def test_nothing_outside_the_store_is_reachable(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    secret_bytes = b"outside the store " + os.urandom(16)
    outside = edge.store.root.parent / "outside.txt"
    outside.write_bytes(secret_bytes)
    link_key = f"renditions/{uuid.uuid4().hex}/link.mp3"
    (edge.store.root / link_key).parent.mkdir(parents=True)
    (edge.store.root / link_key).symlink_to(outside)
    e = int(time.time()) + 300
    pkg = package_path("a", "b", e)
    paths = [
        f"/../outside.txt?{file_query('../outside.txt', e)}",
        f"/../outside.txt?{file_query('outside.txt', e)}",
        f"/%2e%2e/outside.txt?{file_query('outside.txt', e)}",
        f"/renditions/..%2f..%2foutside.txt?{file_query('outside.txt', e)}",
        f"/renditions/x/../../../outside.txt?{file_query('outside.txt', e)}",
        f"{pkg}/../../../../outside.txt",
        f"{pkg}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside.txt",
        f"/{link_key}?{file_query(link_key, e)}",  # a symbolic link out of the store
    ]
    for path in paths:
        resp = raw_get(edge.base_url, path)
        assert resp.status in REFUSED, path
        assert secret_bytes not in resp.body


def test_urls_of_neither_form_are_refused(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    directory = f"renditions/{uuid.uuid4().hex}"
    edge.put(f"{directory}/x.mp3", b"data")
    e = int(time.time()) + 300
    for path in (
        "/",
        "/renditions/",
        f"/{directory}/",
        "/p/",
        "/p/garbage",
        f"/p/{md5_token('x')}/{e}/packages/only-an-asset",
        f"/p/{md5_token('x')}/soon/packages/a/b/master.m3u8",
    ):
        assert raw_get(edge.base_url, path).status == 403, path
    # A signed directory is not a file.
    assert raw_get(edge.base_url, f"/{directory}?{file_query(directory, e)}").status == 404


# ---- the package form -----------------------------------------------------------------------


def _package_urls(edge: Edge, asset_id: str, package_id: str) -> tuple[str, str, str]:
    """(signed master URL, signed MPD URL, the signed prefix ending in `/`)."""
    now = time.time()
    hls = edge.signer.sign_package(asset_id, package_id, 600, "master.m3u8", now_s=now).url
    dash = edge.signer.sign_package(asset_id, package_id, 600, "manifest.mpd", now_s=now).url
    return hls, dash, hls.rsplit("/", 1)[0] + "/"


def test_every_file_of_a_package_is_served_under_its_signed_prefix(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    asset_id, package_id = make_package_tree(edge.store.root)
    hls, dash, prefix_url = _package_urls(edge, asset_id, package_id)
    key_prefix = f"packages/{asset_id}/{package_id}/"
    keys = list(edge.store.list(key_prefix))
    assert {f"{key_prefix}master.m3u8", f"{key_prefix}manifest.mpd"} <= set(keys)
    for key in keys:
        with edge.store.open(key) as handle:
            data = handle.read()
        resp = fetch(prefix_url + key.removeprefix(key_prefix))
        assert resp.status == 200, key
        assert resp.body == data, key
        ext = key.rsplit(".", 1)[-1]
        if ext in EXPECTED_TYPES:
            assert resp.content_type == EXPECTED_TYPES[ext], key
        assert_cors(resp)
    assert fetch(hls).status == 200
    assert fetch(dash).status == 200


def test_everything_the_manifests_reference_resolves(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    asset_id, package_id = make_package_tree(edge.store.root)
    hls, dash, prefix_url = _package_urls(edge, asset_id, package_id)
    found = hls_references(hls)
    assert found["playlists"] and found["init"] and found["segments"], found
    dash_uris = dash_references(dash)
    assert dash_uris
    for url in sorted(set().union(*found.values(), dash_uris)):
        assert url.startswith(prefix_url), f"{url} leaves the signed prefix"
        resp = fetch(url)
        assert resp.status == 200, url
        key = f"packages/{asset_id}/{package_id}/{url.removeprefix(prefix_url)}"
        with edge.store.open(key) as handle:
            assert resp.body == handle.read(), url


def test_a_session_url_opens_its_package_and_only_for_its_session(edge: Edge) -> None:
    """The playback sessions' form: the session id is signed with the package, so every
    segment request names a session that cannot be swapped for another."""
    assert isinstance(edge.store, LocalBlobStore)
    asset_id, package_id = make_package_tree(edge.store.root)
    session_id = str(uuid.uuid4())
    now = int(time.time())
    signed = edge.signer.sign_package(
        asset_id, package_id, 600, "master.m3u8", now_s=now, session_id=session_id
    )
    path = session_path(asset_id, package_id, session_id, now + 600)
    assert signed.url == f"{edge.base_url}{path}/master.m3u8"
    found = hls_references(signed.url)
    prefix_url = f"{edge.base_url}{path}/"
    assert found["segments"]
    for url in sorted(set().union(*found.values())):
        assert url.startswith(prefix_url), f"{url} leaves the session's prefix"
        resp = fetch(url)
        assert resp.status == 200, url
        with edge.store.open(
            f"packages/{asset_id}/{package_id}/{url.removeprefix(prefix_url)}"
        ) as f:
            assert resp.body == f.read()
    other = str(uuid.uuid4())
    token = path.split("/")[2]
    swapped = path.replace(session_id, other)
    assert swapped.split("/")[2] == token
    assert fetch(f"{edge.base_url}{swapped}/master.m3u8").status == 403
    # A package token does not open the session form, nor the other way round.
    package_token = package_path(asset_id, package_id, now + 600).split("/")[2]
    as_session = path.replace(token, package_token, 1)
    assert fetch(f"{edge.base_url}{as_session}/master.m3u8").status == 403
    as_package = f"/p/{token}/{now + 600}/packages/{asset_id}/{package_id}/master.m3u8"
    assert fetch(edge.base_url + as_package).status == 403
    expired = session_path(asset_id, package_id, session_id, now - 1)
    assert fetch(f"{edge.base_url}{expired}/master.m3u8").status == 410
    for malformed in ("/s/", f"/s/{token}/{now + 600}/{session_id}/master.m3u8"):
        assert fetch(edge.base_url + malformed).status in REFUSED


@pytest.mark.parametrize("manifest", ["master.m3u8", "manifest.mpd"])
def test_ffmpeg_plays_the_package_through_its_signed_url(edge: Edge, manifest: str) -> None:
    """ffmpeg's HLS / DASH demuxer, given only the signed manifest URL, fetches every
    playlist and segment through nginx (relative URIs inherit the token) and decodes
    the whole 9 s of every stream."""
    asset_id, package_id = make_package_tree(edge.store.root)
    hls, dash, _ = _package_urls(edge, asset_id, package_id)
    url = hls if manifest == "master.m3u8" else dash
    out = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", url, "-map", "0", "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    frames: dict[str, int] = {}
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            index = line.split(",", 1)[0].strip()
            frames[index] = frames.get(index, 0) + 1
    kinds = re.findall(r"^#media_type (\d+): (\w+)$", out.stdout, flags=re.M)
    videos = [i for i, kind in kinds if kind == "video"]
    audios = [i for i, kind in kinds if kind == "audio"]
    assert len(videos) == 2 and audios
    assert all(frames[i] == pytest.approx(9 * 30, abs=2) for i in videos), frames
    assert all(frames[i] * 1024 / 48000 == pytest.approx(9, abs=0.1) for i in audios), frames


def test_a_tampered_package_token_is_403(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    asset_id, package_id = make_package_tree(edge.store.root)
    hls, _, prefix_url = _package_urls(edge, asset_id, package_id)
    segment = sorted(hls_references(hls)["segments"])[0].removeprefix(prefix_url)
    token, expires = prefix_url.split("/p/", 1)[1].split("/")[:2]
    bad_prefix = prefix_url.replace(f"/p/{token}/", f"/p/{tamper(token)}/")
    later_prefix = prefix_url.replace(f"/{expires}/", f"/{int(expires) + 1}/")
    for url in (
        bad_prefix + "master.m3u8",
        bad_prefix + segment,
        later_prefix + segment,
        prefix_url.replace(f"/p/{token}/", "/p//") + segment,
    ):
        resp = fetch(url)
        assert resp.status == 403, url
        assert_cors(resp)


def test_an_expired_package_url_is_410(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    asset_id, package_id = make_package_tree(edge.store.root)
    old = edge.signer.sign_package(asset_id, package_id, 60, now_s=time.time() - 3600).url
    segment = "seg-0-00001.m4s"
    for url in (old, old.rsplit("/", 1)[0] + "/" + segment):
        resp = fetch(url)
        assert resp.status == 410, url
        assert_cors(resp)


@pytest.mark.security
def test_a_package_token_opens_only_its_own_package(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    asset_a, package_a = make_package_tree(edge.store.root)
    asset_b, package_b = make_package_tree(edge.store.root)
    e = int(time.time()) + 300
    token_a = md5_token(f"mediamill-package:{e}/packages/{asset_a}/{package_a} {SECRET}")
    segment = "seg-0-00001.m4s"
    assert fetch(f"{edge.base_url}{package_path(asset_a, package_a, e)}/{segment}").status == 200
    for prefix in (
        f"packages/{asset_b}/{package_b}",  # another asset's package
        f"packages/{asset_a}/{package_b}",  # another package id under the same asset
        f"packages/{asset_b}/{package_a}",
    ):
        for name in ("master.m3u8", segment):
            url = f"{edge.base_url}/p/{token_a}/{e}/{prefix}/{name}"
            assert fetch(url).status == 403, url
    # `..` is resolved before the check, so it cannot carry A's token into B.
    escape = f"/p/{token_a}/{e}/packages/{asset_a}/{package_a}/../../{asset_b}/{package_b}"
    resp = raw_get(edge.base_url, f"{escape}/master.m3u8")
    assert resp.status in REFUSED


def test_dot_files_inside_a_package_are_not_served(edge: Edge) -> None:
    assert isinstance(edge.store, LocalBlobStore)
    asset_id, package_id = make_package_tree(edge.store.root)
    (edge.store.root / "packages" / asset_id / package_id / ".partial.m4s").write_bytes(b"x")
    _, _, prefix_url = _package_urls(edge, asset_id, package_id)
    assert fetch(prefix_url + ".partial.m4s").status == 404
    (edge.store.root / "packages" / asset_id / package_id / "sub").mkdir()
    assert fetch(prefix_url + "sub").status in REFUSED  # a folder is not a file


# ---- the docker-compose variant: nginx in front of an S3 endpoint ---------------------------

TEMPLATE = ROOT / "config" / "nginx" / "edge-minio.conf.template"


def render_template(bucket_path: str, upstream: str, port: int) -> str:
    """The template as the nginx image's envsubst step renders it, pointed at `upstream`."""
    text = TEMPLATE.read_text()
    for name, value in {
        "MEDIAMILL_SIGNING_SECRET": SECRET,
        "MEDIAMILL_S3_BUCKET": bucket_path,
    }.items():
        assert "${" + name + "}" in text
        text = text.replace("${" + name + "}", value)
    assert "${" not in text
    assert "minio:9000" in text and "listen 8080;" in text
    return text.replace("minio:9000", upstream).replace("listen 8080;", f"listen 127.0.0.1:{port};")


def anonymous_download(bucket: str) -> dict[str, object]:
    """A bucket policy letting anyone GET renditions and packages (never originals)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"],
                "Resource": [
                    f"arn:aws:s3:::{bucket}/tenant-a/renditions/*",
                    f"arn:aws:s3:::{bucket}/tenant-a/packages/*",
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def minio_edge(tmp_path_factory: pytest.TempPathFactory, moto_server) -> Iterator[Edge]:
    """The compose edge's template served by a real nginx in front of moto's S3 server."""
    from mediamill.storage.blobs.s3 import S3BlobStore

    nginx_binary()
    tmp = tmp_path_factory.mktemp("edge-minio")
    bucket = f"edge-{uuid.uuid4().hex[:12]}"
    store = S3BlobStore(
        bucket,
        "tenant-a",
        endpoint_url=moto_server.endpoint_url,
        access_key_id="testing",
        secret_access_key="testing",
        region="us-east-1",
    )
    store.ensure_bucket()
    # What `mc anonymous set download` does in the compose `minio-setup` service.
    store.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(anonymous_download(bucket)))
    port = free_port()
    (tmp / "edge.conf").write_text(
        render_template(f"{bucket}/tenant-a", urlsplit(moto_server.endpoint_url).netloc, port)
    )
    state = tmp / "state"
    state.mkdir()
    conf = tmp / "nginx.conf"
    # The parts of the image's own nginx.conf the template relies on.
    conf.write_text(
        f"worker_processes 1;\npid {state}/nginx.pid;\nerror_log {state}/error.log warn;\n"
        "events {}\nhttp {\n"
        + "".join(
            f"    {kind}_temp_path {state}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    access_log {state}/access.log;\n    default_type application/octet-stream;\n"
        f"    include {tmp / 'edge.conf'};\n}}\n"
    )
    with running_nginx(conf, state, port) as base_url:
        yield Edge(base_url, store, NginxSigner(base_url, SECRET))


@pytest.mark.parametrize("ext", ["mp3", "m3u8", "m4s", "opus"])
def test_minio_edge_serves_signed_files(minio_edge: Edge, ext: str) -> None:
    key = f"renditions/{uuid.uuid4().hex}/spec.{ext}"
    data = minio_edge.put(key, os.urandom(3000))
    resp = fetch(minio_edge.signer.sign_file(key, 300).url)
    assert resp.status == 200
    assert resp.body == data
    assert resp.content_type == EXPECTED_TYPES[ext]
    assert_cors(resp)
    part = fetch(minio_edge.signer.sign_file(key, 300).url, headers={"Range": "bytes=0-9"})
    assert (part.status, part.body) == (206, data[:10])


def test_minio_edge_refuses_like_the_local_edge(minio_edge: Edge) -> None:
    key = f"renditions/{uuid.uuid4().hex}/spec.mp3"
    data = minio_edge.put(key, os.urandom(1000))
    e = int(time.time()) + 300
    token = md5_token(f"mediamill-file:{e}/{key} {SECRET}")
    base = minio_edge.base_url
    assert fetch(f"{base}/{key}?md5={tamper(token)}&expires={e}").status == 403
    assert fetch(f"{base}/{key}").status == 403
    expired = fetch(minio_edge.signer.sign_file(key, 60, now_s=time.time() - 3600).url)
    assert expired.status == 410
    assert_cors(expired)
    assert fetch(f"{base}/.incoming/x?{file_query('.incoming/x', e)}").status == 404
    missing = f"renditions/{uuid.uuid4().hex}/none.mp3"
    assert fetch(f"{base}/{missing}?{file_query(missing, e)}").status == 404
    assert fetch(f"{base}/{key}", method="OPTIONS").status == 204
    assert fetch(f"{base}/p/garbage").status == 403
    assert data  # the refusals above were about a real object
    # Originals stay private in the bucket: a valid token does not open them.
    original = f"originals/{hashlib.sha256(data).hexdigest()}"
    minio_edge.put(original, data)
    resp = fetch(minio_edge.signer.sign_file(original, 300).url)
    assert resp.status == 403
    assert resp.body != data


def test_minio_edge_serves_packages_under_the_signed_prefix(minio_edge: Edge) -> None:
    asset_id = hashlib.sha256(os.urandom(8)).hexdigest()
    files = {name: os.urandom(500) for name in ("master.m3u8", "v/init-v.m4s", "v/seg-v-1.m4s")}
    for name, data in files.items():
        minio_edge.put(f"packages/{asset_id}/pkg/{name}", data)
    minio_edge.put(f"packages/{asset_id}/other/master.m3u8", b"#EXTM3U\n")
    hls, _, prefix_url = _package_urls(minio_edge, asset_id, "pkg")
    for name, data in files.items():
        resp = fetch(prefix_url + name)
        assert (resp.status, resp.body) == (200, data), name
        assert resp.content_type == EXPECTED_TYPES[name.rsplit(".", 1)[-1]]
    assert fetch(prefix_url.replace("/pkg/", "/other/") + "master.m3u8").status == 403
    old = minio_edge.signer.sign_package(asset_id, "pkg", 60, now_s=time.time() - 3600).url
    assert fetch(old).status == 410
    assert fetch(hls.replace("/p/", "/p/x")).status == 403


# ---- the API behind the edge (`nginx-conf --api`) ---------------------------------------------


@pytest.mark.security
def test_the_edge_keeps_slow_and_greedy_clients_off_the_api(tmp_path: Path) -> None:
    """`mediamill edge nginx-conf --api` in front of a real `mediamill serve`: requests
    pass through; slow headers and stalled bodies are cut by nginx's timeouts, and past
    the per-address connection limit nginx answers 503 while the API never sees them."""
    nginx_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env.update(
        MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
        MEDIAMILL_HTTP_HEADER_TIMEOUT_S="1",
        MEDIAMILL_HTTP_BODY_TIMEOUT_S="1",
        MEDIAMILL_EDGE_API_CONNECTIONS_PER_IP="20",
    )
    api_port, edge_port, api_edge_port = free_port(), free_port(), free_port()
    (tmp_path / "store").mkdir()
    state = tmp_path / "state"
    conf = subprocess.run(
        [
            sys.executable, "-m", "mediamill", "edge", "nginx-conf",
            "--listen", f"127.0.0.1:{edge_port}", "--root", str(tmp_path / "store"),
            "--state-dir", str(state), "--api", f"127.0.0.1:{api_port}",
            "--api-listen", f"127.0.0.1:{api_edge_port}",
        ],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "client_header_timeout 1s;" in conf and "limit_conn mediamill_api_conn 20;" in conf
    (tmp_path / "nginx.conf").write_text(conf)
    api = subprocess.Popen(
        [sys.executable, "-m", "mediamill", "serve", "--port", str(api_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "api.log").open("w"),
    )  # fmt: skip
    try:
        with running_nginx(tmp_path / "nginx.conf", state, edge_port):
            through = f"http://127.0.0.1:{api_edge_port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = raw_get(through, "/health")
                    if health.status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
                time.sleep(0.2)
            assert json.loads(health.body) == {"status": "ok"}
            # A slowloris: a header byte every 0.2 s is cut at the header timeout.
            head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
            cut_after_s = slowloris(api_edge_port, head, byte_delay_s=0.2, wait_s=3.0)
            assert cut_after_s is not None and cut_after_s < 9, "a slowloris was kept"
            # Stalled bodies: the first 20 wait at nginx, the rest are 503 at once.
            stalled = []
            for _ in range(25):
                s = socket.create_connection(("127.0.0.1", api_edge_port), timeout=5)
                s.sendall(b"POST /v0/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
                stalled.append(s)
            # nginx's workers take them in any order: count, do not expect positions.
            answers = []
            for s in stalled:
                s.settimeout(4)
                try:
                    answers.append(s.recv(64)[:12])
                except TimeoutError:
                    answers.append(b"kept")
                except OSError:
                    answers.append(b"reset")
            assert answers.count(b"HTTP/1.1 503") == 5, answers
            assert b"kept" not in answers, "a stalled body was kept past the body timeout"
            for s in stalled:
                s.close()
            assert raw_get(through, "/health").status == 200
    finally:
        api.terminate()
        api.wait(timeout=30)


def test_the_compose_api_proxy_file_is_valid_nginx(tmp_path: Path) -> None:
    """config/nginx/api-proxy.conf as the nginx image includes it (inside `http`); the
    upstream name `api` resolves only in the compose network, so it is pointed at the
    loopback for `nginx -t`, which resolves upstreams."""
    text = (ROOT / "config/nginx/api-proxy.conf").read_text()
    assert text.count("server api:8000;") == 1
    (tmp_path / "api-proxy.conf").write_text(
        text.replace("server api:8000;", "server 127.0.0.1:8000;")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  include {tmp_path}/api-proxy.conf;\n}}\n"
    )
    proc = subprocess.run(
        [nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
