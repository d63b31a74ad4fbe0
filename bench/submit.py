"""Benchmark of report submission (issue: Field collection). Run: ``.venv/bin/python -m bench.submit``.

One ~150 KB JPEG a request, concurrency 16, one uvicorn worker each, all in the same run:
(a) a bare FastAPI endpoint that receives the upload, writes it and inserts one row;
(b) the same plus a naive Pillow open, EXIF read and 256 px thumbnail;
CityGrid's POST /api/v1/reports with everything the contract asks (validation, locator,
idempotency, photo decoding check, fsync, flags).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import piexif
from PIL import Image

from api.admin_db import dsn
from bench.common import ratio, seeded_database

MARK = b"citygrid-bench-" + b"0" * 32  # replaced per request: every photo's bytes differ
CLIENT_ID = b"00000000-0000-0000-0000-000000000000"  # likewise every report's client_id


def photo(target: int = 150_000) -> bytes:
    """A photo-like JPEG (smooth colour field with grain) of about ``target`` bytes, with EXIF GPS."""
    rng = np.random.default_rng(1)
    h, w = 1200, 1600
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [128 + 60 * np.sin(x / 90), 128 + 60 * np.cos(y / 70), 128 + 40 * np.sin((x + y) / 150)], -1
    )
    exif = piexif.dump(
        {
            "0th": {piexif.ImageIFD.ImageDescription: MARK},
            "GPS": {
                piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((27, 1), (33, 1), (0, 1)),
                piexif.GPSIFD.GPSLongitudeRef: b"E",
                piexif.GPSIFD.GPSLongitude: ((110, 1), (0, 1), (0, 1)),
            },
        }
    )
    best = b""
    for grain in (4, 6, 8, 10, 12, 14, 16):
        pixels = np.clip(base + rng.normal(0, grain, base.shape), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=80, exif=exif)
        best = out.getvalue()
        if len(best) >= target:
            break
    return best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env={**os.environ, **env},
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{app} did not start")


def _unique(body: bytes) -> bytes:
    """The template body with a fresh photo mark and client_id (same lengths)."""
    fresh = body.replace(MARK, b"citygrid-bench-" + uuid.uuid4().hex.encode())
    return fresh.replace(CLIENT_ID, str(uuid.uuid4()).encode())


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine() -> tuple[float, float]:
    """(idle, total) CPU seconds of the whole machine so far."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (ticks[3] + ticks[4]) / _TICK, sum(ticks[:8]) / _TICK


@dataclass
class Run:
    """One variant's load: throughput, and where the machine's CPU went per request."""

    per_s: float
    server_ms: float  # the uvicorn process, every thread
    client_ms: float  # this process, the load generator
    idle: float  # share of the machine's CPU time left unused


async def _load(
    url: str, n: int, concurrency: int, files: list, headers: dict[str, str], server_pid: int
) -> Run:
    """Requests per second; the multipart body is encoded once, so the client stays cheap."""
    template = httpx.Request("POST", url, files=files)
    body = template.read()
    headers = {**headers, "Content-Type": template.headers["Content-Type"]}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            r = await client.post(url, content=_unique(body), headers=headers)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")

        for i in range(concurrency * 2):  # warm-up
            await one(-1 - i)
        queue = iter(range(n))

        async def worker() -> None:
            for i in queue:
                await one(i)

        server_cpu, client_cpu, (idle, total) = _cpu_s(server_pid), time.process_time(), _machine()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        idle_after, total_after = _machine()
        return Run(
            n / elapsed,
            (_cpu_s(server_pid) - server_cpu) * 1000 / n,
            (time.process_time() - client_cpu) * 1000 / n,
            (idle_after - idle) / max(total_after - total, 1e-9),
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=800, help="requests per variant and round")
    parser.add_argument("-c", type=int, default=16, help="concurrency")
    parser.add_argument("-r", type=int, default=5, help="rounds; the variants alternate within each")
    args = parser.parse_args()
    _, url = await seeded_database()
    jpeg = photo()
    print(
        f"\nSubmission: {args.n:,} requests a variant in each of {args.r} rounds, "
        f"concurrency {args.c}, one {len(jpeg) / 1000:.0f} KB JPEG each"
    )

    bare_files = [("photos", ("p.jpg", jpeg, "image/jpeg"))]
    part = {
        "kind": "event",
        "category": "06010",
        "description": "暴露垃圾",
        "location": {"lon": 110.0, "lat": 27.55, "crs": "wgs84", "accuracy_m": 5},
    }
    report = json.dumps({**part, "client_id": CLIENT_ID.decode()}, ensure_ascii=False)
    report_files = [("report", (None, report, "application/json")), ("photos", ("p.jpg", jpeg, "image/jpeg"))]

    runs: dict[str, list[Run]] = {"bare": [], "naive": [], "ours": []}
    with tempfile.TemporaryDirectory() as folder:
        bare_proc, bare_base = _serve(
            "bench.bare_app:app", {"BENCH_DSN": dsn(url), "BENCH_DIR": str(Path(folder) / "bare")}
        )
        ours_proc, ours_base = _serve(
            "api.main:app", {"DATABASE_URL": url, "CITYGRID_PHOTO_DIR": str(Path(folder) / "photos")}
        )
        try:
            async with httpx.AsyncClient() as client:
                signed_in = await client.post(
                    f"{ours_base}/api/v1/auth/token",
                    data={"username": "collector01", "password": "citygrid-demo"},
                )
            auth = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
            # The variants alternate, their order rotating each round, so that a machine slowing
            # down or speeding up (shared virtual CPUs do, by tens of percent within minutes)
            # touches all three alike; the ratios are taken within each round.
            variants = {
                "bare": (f"{bare_base}/bare", bare_files, {}, bare_proc.pid),
                "naive": (f"{bare_base}/naive", bare_files, {}, bare_proc.pid),
                "ours": (f"{ours_base}/api/v1/reports", report_files, auth, ours_proc.pid),
            }
            keys = list(variants)
            for round_ in range(1, args.r + 1):
                shift = (round_ - 1) % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    target, files, headers, pid = variants[key]
                    runs[key].append(await _load(target, args.n, args.c, files, headers, pid))
                print(
                    f"  round {round_}: (a) {runs['bare'][-1].per_s:,.0f}  (b) {runs['naive'][-1].per_s:,.0f}  "
                    f"CityGrid {runs['ours'][-1].per_s:,.0f} req/s"
                )
        finally:
            for proc in (bare_proc, ours_proc):
                proc.terminate()
                proc.wait()

    def median(key: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs[key])

    print("  medians of the rounds (CPU in ms a request: the server process, the load generator;")
    print("  idle: the machine's CPU left unused):")
    for key, label in (
        ("bare", "(a) bare: receive, write, insert one row"),
        ("naive", "(b) bare + naive Pillow open, EXIF, 256 px thumbnail"),
        ("ours", "CityGrid POST /api/v1/reports (full contract)"),
    ):
        print(
            f"  {label:<54} {median(key, 'per_s'):>6,.0f} req/s   server {median(key, 'server_ms'):.2f}"
            f"  client {median(key, 'client_ms'):.2f}  idle {median(key, 'idle'):.0%}"
        )
    per_round = {
        key: [o.per_s / b.per_s for o, b in zip(runs["ours"], runs[key], strict=True)]
        for key in ("naive", "bare")
    }
    for key, name in (("naive", "(b)"), ("bare", "(a)")):
        print(
            f"  CityGrid / {name} in each round: {', '.join(f'{r:.2f}' for r in per_round[key])}"
            f"  (ratio of the medians above: {median('ours', 'per_s') / median(key, 'per_s'):.2f})"
        )
    print("  the median of the rounds' ratios:")
    ratio("CityGrid / (b) naive image work", statistics.median(per_round["naive"]), 1.0, 1.5)
    ratio("CityGrid / (a) bare upload", statistics.median(per_round["bare"]), 1.0, 0.4)


if __name__ == "__main__":
    asyncio.run(main())
