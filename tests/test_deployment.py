"""docker-compose.yml and the Dockerfile (no Docker engine here: parsed and checked)."""

from __future__ import annotations

import re

import yaml

from api.settings import PROJECT_ROOT


def test_compose_services_ports_volumes() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "app"}
    db, app = services["db"], services["app"]
    assert re.fullmatch(r"postgis/postgis:15-3\.\d+", db["image"])
    assert "healthcheck" in db and "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert app["build"] == "."
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert "8000:8000" in app["ports"]
    assert (
        app["environment"]["DATABASE_URL"].startswith("postgresql://")
        and "@db:5432/" in app["environment"]["DATABASE_URL"]
    )
    assert "healthcheck" in app
    named = set(compose["volumes"])
    assert named == {"pgdata", "photos"}
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"]
    assert any(v.startswith("photos:") for v in app["volumes"])
    photo_dir = app["environment"]["CITYGRID_PHOTO_DIR"]
    assert f"photos:{photo_dir}" in app["volumes"]


def test_dockerfile_migrates_on_start() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert "citygrid migrate" in cmd and "uvicorn api.main:app" in cmd
    for package in ("api", "geo", "grids", "cases", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile
