"""Submission over a real socket: uvicorn in a subprocess, as the handheld app meets it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from api.db import Database
from tests.conftest import PASSWORD, CloneDb
from tests.images import jpeg, oversized


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, photo_dir: Path) -> None:
        self.url, self.photo_dir = url, photo_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.url, "CITYGRID_PHOTO_DIR": str(self.photo_dir)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("uvicorn did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # no graceful shutdown: a crash
            self.proc.wait(10)


@pytest.fixture(scope="module")
async def server(clone_db: CloneDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(await clone_db(), tmp_path_factory.mktemp("socket-photos"))
    srv.start()
    yield srv
    srv.kill()


def _token(base: str, username: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _part(client_id: str | None = None) -> str:
    return json.dumps(
        {
            "client_id": client_id or str(uuid.uuid4()),
            "kind": "event",
            "category": "06010",
            "description": "测试",
            "location": {"lon": 110.0, "lat": 27.55, "crs": "wgs84"},
        }
    )


async def _reports(url: str) -> int:
    db = Database(url, pool_size=1)
    try:
        async with db.sessions() as session:
            return await session.scalar(text("SELECT count(*) FROM reports"))
    finally:
        await db.dispose()


def test_oversized_upload_gets_a_readable_413(server: Server) -> None:
    headers = _token(server.base, "collector01")
    files = [
        ("report", (None, _part(), "application/json")),
        ("photos", ("big.jpg", oversized(12 * 1024 * 1024))),
    ]
    r = httpx.post(f"{server.base}/api/v1/reports", files=files, headers=headers, timeout=60)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"
    # The connection stays usable for the app's next request.
    assert httpx.get(f"{server.base}/healthz").status_code == 200


async def test_cut_off_upload_stores_nothing(server: Server) -> None:
    before = await _reports(server.url)
    token = _token(server.base, "collector01")["Authorization"]
    boundary = "citygridboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="report"\r\n\r\n{_part()}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="a.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    photo = jpeg(110.0, 27.55, size=(2000, 1500))
    body_len = len(head) + len(photo) + len(f"\r\n--{boundary}--\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            (
                f"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {body_len}\r\n\r\n"
            ).encode()
            + head
            + photo[: len(photo) // 2]
        )
        time.sleep(0.3)
    time.sleep(0.5)
    assert await _reports(server.url) == before
    assert list((server.photo_dir / "tmp").glob("*.part")) == []


async def test_a_201_survives_a_crash(server: Server) -> None:
    headers = _token(server.base, "collector02")
    photo = jpeg(110.0, 27.55)
    client_id = str(uuid.uuid4())
    files = [
        ("report", (None, _part(client_id), "application/json")),
        ("photos", ("a.jpg", photo, "image/jpeg")),
    ]
    r = httpx.post(f"{server.base}/api/v1/reports", files=files, headers=headers)
    assert r.status_code == 201
    created = r.json()
    server.kill()  # right after the 201
    server.start()
    again = httpx.get(f"{server.base}/api/v1/reports/{created['id']}", headers=headers)
    assert again.status_code == 200 and again.json()["photos"] == created["photos"]
    stored = (
        server.photo_dir
        / "objects"
        / created["photos"][0]["sha256"][:2]
        / created["photos"][0]["sha256"][2:4]
    )
    assert (stored / created["photos"][0]["sha256"]).read_bytes() == photo
    retry = httpx.post(f"{server.base}/api/v1/reports", files=files, headers=headers)
    assert retry.status_code == 200 and retry.json()["id"] == created["id"]
