#!/usr/bin/env python3
"""Benchmark the embedded edge (`mediamill serve`, /cdn) against the nginx edge
(`mediamill edge nginx-conf`) serving the same local store and the same signed URLs.

The store holds one package-like tree: `--segments` media segments of `--segment-kib`
KiB (random bytes; the edge never looks inside) and a manifest. Each edge runs in its own
process (nginx, one worker; `python -m mediamill serve`); the client fetches every file
of the package through its signed package URL, `--rounds` times, over one keep-alive
connection (a player's pattern), then with `--clients` connections at once. Reported:
requests per second, MB/s, p50/p99 latency, and the embedded edge's ratio to nginx in
the same run. Needs nginx on PATH (scripts/test installs it).

    python scripts/bench_edge.py [--segments 200] [--segment-kib 512] [--rounds 3] [--clients 4]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from benchlib import free_port

from mediamill.config.edge import render_nginx_conf
from mediamill.pipeline.signing import NginxSigner
from mediamill.schemas import keys

SECRET = "bench-edge-secret-0123456789abcdef"


def wait_for(port: int, path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def make_tree(store: Path, segments: int, segment_kib: int) -> tuple[str, str, list[str]]:
    asset_id, package_id = uuid.uuid4().hex * 2, "pkg-bench"
    prefix = keys.package_prefix(asset_id, package_id)
    folder = store / prefix
    folder.mkdir(parents=True)
    names = [f"seg-0-{i:05d}.m4s" for i in range(1, segments + 1)]
    for name in names:
        (folder / name).write_bytes(os.urandom(segment_kib * 1024))
    (folder / "master.m3u8").write_text("#EXTM3U\n" + "\n".join(names) + "\n")
    return asset_id, package_id, ["master.m3u8", *names]


def fetch_all(base: str, paths: list[str]) -> list[float]:
    """GET every path over one keep-alive connection; each request's seconds."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    took = []
    for path in paths:
        started = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        took.append(time.perf_counter() - started)
        if resp.status != 200 or not body:
            raise SystemExit(f"{path}: {resp.status}")
    conn.close()
    return took


def measure(base: str, paths: list[str], rounds: int, clients: int, size_bytes: int) -> dict:
    one = []
    started = time.perf_counter()
    for _ in range(rounds):
        one += fetch_all(base, paths)
    one_wall = time.perf_counter() - started
    many: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        got = fetch_all(base, paths)
        with lock:
            many.extend(got)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    many_wall = time.perf_counter() - started
    q = statistics.quantiles(one, n=100)
    return {
        "rps_1": len(one) / one_wall,
        "mbps_1": rounds * size_bytes / one_wall / 1e6,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "rps_n": len(many) / many_wall,
        "mbps_n": clients * size_bytes / many_wall / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=200)
    ap.add_argument("--segment-kib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    store = work / "store"
    asset_id, package_id, names = make_tree(store, a.segments, a.segment_kib)
    size_bytes = sum((store / keys.package_prefix(asset_id, package_id) / n).stat().st_size
                     for n in names)  # fmt: skip
    procs = []
    try:
        nginx_port, api_port = free_port(), free_port()
        state = work / "nginx"
        state.mkdir()
        conf = work / "nginx.conf"
        text = render_nginx_conf(listen=f"127.0.0.1:{nginx_port}", root=store, secret=SECRET,
                                 state_dir=state, packages_prefix=keys.PACKAGES)  # fmt: skip
        conf.write_text(text.replace("worker_processes auto;", "worker_processes 1;"))
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        procs.append(subprocess.Popen([nginx, "-p", str(state), "-c", str(conf), "-g", directives]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env |= {
            "MEDIAMILL_DATA_DIR": str(work / "data"),
            "MEDIAMILL_SIGNING_SECRET": SECRET,
            "MEDIAMILL_STORAGE_URL": store.as_uri(),
            "MEDIAMILL_HTTP_PORT": str(api_port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mediamill", "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(nginx_port, "/")
        wait_for(api_port, "/health")
        rows = {}
        for name, base in (("nginx edge", f"http://127.0.0.1:{nginx_port}"),
                           ("embedded edge", f"http://127.0.0.1:{api_port}/cdn")):  # fmt: skip
            signed = NginxSigner(base, SECRET).sign_package(asset_id, package_id, 3600).url
            prefix = urlsplit(signed).path.rsplit("/", 1)[0]
            paths = [f"{prefix}/{n}" for n in names]
            fetch_all(base, paths[:20])  # warm the page cache and the server
            rows[name] = measure(base, paths, a.rounds, a.clients, size_bytes)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    ref = rows["nginx edge"]
    print(f"{a.segments} segments of {a.segment_kib} KiB + a manifest; {a.rounds} rounds on one "
          f"connection, then {a.clients} connections at once\n")  # fmt: skip
    print(
        "| edge | req/s (1 conn) | MB/s (1 conn) | p50 | p99 | req/s "
        f"({a.clients} conns) | MB/s ({a.clients} conns) | MB/s vs nginx (1 / {a.clients}) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['rps_1']:.0f} | {r['mbps_1']:.0f} | {r['p50_ms']:.2f} ms | "
            f"{r['p99_ms']:.2f} ms | {r['rps_n']:.0f} | {r['mbps_n']:.0f} | "
            f"{r['mbps_1'] / ref['mbps_1']:.2f}x / {r['mbps_n'] / ref['mbps_n']:.2f}x |"
        )


if __name__ == "__main__":
    main()
