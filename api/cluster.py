"""The embedded PostgreSQL + PostGIS cluster that ``make run`` and ``make test`` start.

A private cluster (own data folder, loopback TCP port, no Unix socket) run from the system's
PostgreSQL 15 binaries. PostgreSQL refuses to run as root, so when we are root the cluster
belongs to the ``postgres`` user; if that user cannot reach the checkout (a clone under a
private home folder), the data folder moves to the system temp folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from api.settings import PROJECT_ROOT, Settings

PG_MAJOR = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
POSTGIS_PACKAGE = f"postgresql-{PG_MAJOR}-postgis-3"
SUPERUSER = "citygrid"


class ClusterError(RuntimeError):
    """The embedded cluster cannot be set up; the message says what to do."""


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if _is_root() else cmd


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _postgres_can_use(folder: Path) -> bool:
    if not _is_root():
        return True
    return (
        _run(
            _as_owner(["test", "-r", str(folder), "-a", "-w", str(folder), "-a", "-x", str(folder)]),
            check=False,
        ).returncode
        == 0
    )


@dataclass(frozen=True)
class Cluster:
    home: Path  # owned by the cluster's user: data folder and log
    port: int

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    def pg_ctl(self, *args: str) -> list[str]:
        return _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args])


def locate(settings: Settings) -> Cluster:
    """Where the cluster lives: the checkout's .pgdata, or a temp folder the postgres user reaches."""
    if settings.pg_data is not None:
        return Cluster(settings.pg_data, settings.pg_port)
    home = PROJECT_ROOT / ".pgdata"
    digest = hashlib.sha1(str(PROJECT_ROOT).encode()).hexdigest()[:10]
    fallback = Path(tempfile.gettempdir()) / f"citygrid-{digest}"
    if fallback.exists() and not home.exists():
        return Cluster(fallback, settings.pg_port)
    home.mkdir(exist_ok=True)
    if _is_root():
        shutil.chown(home, "postgres", "postgres")
    if _postgres_can_use(home):
        return Cluster(home, settings.pg_port)
    home.rmdir()
    fallback.mkdir(exist_ok=True)
    if _is_root():
        shutil.chown(fallback, "postgres", "postgres")
    return Cluster(fallback, settings.pg_port)


def postgis_installed() -> bool:
    share = Path(f"/usr/share/postgresql/{PG_MAJOR}/extension")
    return (share / "postgis.control").exists() and (share / "pg_trgm.control").exists()


def ensure_software() -> None:
    """PostgreSQL 15 with PostGIS 3, installed from Debian packages when we may."""
    if postgis_installed() and (PG_BIN / "postgres").exists():
        return
    packages = (
        [POSTGIS_PACKAGE] if (PG_BIN / "postgres").exists() else [f"postgresql-{PG_MAJOR}", POSTGIS_PACKAGE]
    )
    if not _is_root() or shutil.which("apt-get") is None:
        raise ClusterError(
            "PostgreSQL 15 with PostGIS 3 is missing. Install it (as root): "
            f"apt-get update && apt-get install -y {' '.join(packages)} "
            "— or set DATABASE_URL to another PostGIS."
        )
    print(f"citygrid: installing {' '.join(packages)} from Debian packages…", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)
    if not postgis_installed():
        raise ClusterError(f"{POSTGIS_PACKAGE} was installed but postgis.control is still missing")


def _configure(cluster: Cluster) -> None:
    conf = cluster.data / "postgresql.auto.conf"
    lines = [
        "listen_addresses = '127.0.0.1'",
        f"port = {cluster.port}",
        "unix_socket_directories = ''",
        "max_connections = 200",
        "shared_buffers = '256MB'",
        "work_mem = '32MB'",
        "maintenance_work_mem = '256MB'",
        "timezone = 'Asia/Shanghai'",
        "log_min_messages = 'warning'",
    ]
    _run(_as_owner(["sh", "-c", f"printf '%s\\n' \"$@\" > {conf}", "sh", *lines]))


def is_running(cluster: Cluster) -> bool:
    if not (cluster.data / "PG_VERSION").exists():
        return False
    return _run(cluster.pg_ctl("status"), check=False).returncode == 0


def up(settings: Settings) -> Cluster:
    """Create (first time) and start the cluster; a no-op when it already runs."""
    ensure_software()
    cluster = locate(settings)
    if not (cluster.data / "PG_VERSION").exists():
        # C.UTF-8: UTF-8 text with byte-order collation, so Chinese indexes and sorts.
        result = _run(
            _as_owner(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(cluster.data),
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                ]
            ),
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"initdb failed:\n{result.stderr}")
    _configure(cluster)
    if is_running(cluster):
        return cluster
    result = _run(cluster.pg_ctl("-l", str(cluster.log), "-w", "-t", "60", "start"), check=False)
    if result.returncode != 0:
        tail = cluster.log.read_text(errors="replace")[-2000:] if cluster.log.exists() else ""
        raise ClusterError(
            f"the cluster did not start (port {cluster.port} taken?):\n{result.stderr}\n{tail}"
        )
    return cluster


def down(settings: Settings) -> bool:
    cluster = locate(settings)
    if not is_running(cluster):
        return False
    _run(cluster.pg_ctl("-m", "fast", "-w", "stop"))
    return True


def status(settings: Settings) -> str:
    cluster = locate(settings)
    state = "running" if is_running(cluster) else "stopped"
    return f"{state}: data {cluster.data}, port {cluster.port}"
