"""``citygrid``: the admin console command (cluster, migrations, seed, server)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from api import admin_db, cluster
from api.settings import Settings, get_settings


def _db_up(settings: Settings) -> None:
    if not settings.embedded:
        print("citygrid: DATABASE_URL is set; no embedded cluster to start")
        return
    started = cluster.up(settings)
    print(
        f"citygrid: PostgreSQL {cluster.PG_MAJOR} + PostGIS running on 127.0.0.1:{started.port} "
        f"(data {started.data})"
    )


def _ensure_database(settings: Settings) -> None:
    if settings.embedded and asyncio.run(admin_db.create_database(settings, settings.database_name)):
        print(f"citygrid: created database {settings.database_name}")


def _migrate(settings: Settings, revision: str = "head") -> None:
    admin_db.migrate(settings.url_for(), revision)
    print(f"citygrid: schema at {admin_db.head() if revision == 'head' else revision}")


async def _seed(settings: Settings, force: bool) -> None:
    from api.db import Database
    from api.seed import seed_huaihua

    db = Database(settings.url_for(), pool_size=2)
    try:
        async with db.sessions() as session:
            result = await seed_huaihua(session, settings.demo_password if settings.demo else None, force)
    finally:
        await db.dispose()
    if result.skipped:
        print(f"citygrid: Huaihua demo already loaded ({result.grids} grids, {result.components} components)")
    else:
        print(
            f"citygrid: loaded the Huaihua demo: {result.grids} grids, {result.components} components, "
            f"{result.new_accounts} new accounts in {result.seconds:.1f} s"
        )


async def _validation_report(settings: Settings, tolerance: float) -> dict:
    from api.db import Database
    from grids.validation import Tolerances, validate

    db = Database(settings.url_for(), pool_size=1)
    try:
        async with db.sessions() as session:
            return await validate(session, Tolerances(tolerance, tolerance, tolerance))
    finally:
        await db.dispose()


def _validate(settings: Settings, geojson: str | None, tolerance: float) -> int:
    import json

    from grids.validation import as_geojson

    report = asyncio.run(_validation_report(settings, tolerance))
    print(f"{report['grids']} grids: " + ("valid" if report["valid"] else "problems found"))
    for kind, n in report["summary"].items():
        print(f"  {kind:<20} {n}")
    for problem in report["problems"][:50]:
        print(f"  - {problem['kind']}: {', '.join(problem['grids']) or problem['area']}: {problem['detail']}")
    if geojson:
        Path(geojson).write_text(json.dumps(as_geojson(report), ensure_ascii=False), encoding="utf-8")
        print(f"problem geometries written to {geojson}")
    return 0 if report["valid"] else 2


async def _with_session(settings: Settings, run: Callable[[AsyncSession], Awaitable[int]]) -> int:
    """Run ``run(session)`` on a one-connection engine (grid import/export)."""
    from api.db import Database

    db = Database(settings.url_for(), pool_size=1)
    try:
        async with db.sessions() as session:
            return await run(session)
    finally:
        await db.dispose()


def _banner(settings: Settings) -> None:
    from api.seed import DEMO_ACCOUNTS

    base = f"http://{settings.host}:{settings.port}"
    print("\nCityGrid is starting:")
    print(f"  API          {base}/api/v1/   (OpenAPI docs: {base}/docs)")
    print(f"  Health       {base}/healthz")
    if settings.demo:
        print(f"\nDemo accounts (password: {settings.demo_password!r}, from CITYGRID_DEMO_PASSWORD):")
        for name, what in DEMO_ACCOUNTS:
            print(f"  {name:<30} {what}")
    print("\nCtrl-C stops the server; `citygrid db down` stops the database.\n", flush=True)


def _serve(settings: Settings, reload: bool = False) -> None:
    import uvicorn

    _banner(settings)
    uvicorn.run("api.main:app", host=settings.host, port=settings.port, reload=reload, log_level="info")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citygrid", description="CityGrid administration")
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="the embedded PostgreSQL + PostGIS cluster")
    db.add_argument("action", choices=["up", "down", "status"])
    mig = sub.add_parser("migrate", help="upgrade (or downgrade) the schema")
    mig.add_argument("revision", nargs="?", default="head")
    mig.add_argument("--down", action="store_true", help="downgrade to REVISION instead")
    seed = sub.add_parser("seed", help="load reference data")
    seed.add_argument("dataset", choices=["huaihua"])
    seed.add_argument("--force", action="store_true", help="reload even if already loaded")
    serve = sub.add_parser("serve", help="serve the API")
    serve.add_argument("--reload", action="store_true")
    sub.add_parser("up", help="everything `make run` does: database, schema, demo data, server")
    grids = sub.add_parser("grids", help="the unit-grid system")
    grids_sub = grids.add_subparsers(dest="grids_command", required=True)
    val = grids_sub.add_parser("validate", help="the grid validation report")
    val.add_argument("--geojson", metavar="FILE", help="also write the problem geometries as GeoJSON")
    val.add_argument("--tolerance", type=float, default=1.0, help="m² below which gaps/overlaps are ignored")
    imp = grids_sub.add_parser("import", help="replace communities' grids from a grid file")
    imp.add_argument("file", help=".gpkg, .geojson, .shp (with .prj) or a zipped Shapefile")
    imp.add_argument("--dry-run", action="store_true", help="print the plan and the validation report only")
    imp.add_argument("--community", metavar="CODE", help="replace only this community (12 digits)")
    exp = grids_sub.add_parser("export", help="write the grids as GeoPackage, Shapefile or GeoJSON")
    exp.add_argument("file", help="FILE.gpkg, FILE.zip or FILE.shp (Shapefile), FILE.geojson")
    exp.add_argument("--format", choices=["gpkg", "shp", "geojson"], help="default: from the file name")
    exp.add_argument("--community", metavar="CODE", help="only this community")
    exp.add_argument("--area", metavar="CODE", help="only this management area, e.g. JK")
    args = parser.parse_args(argv)
    settings = get_settings()

    try:
        if args.command == "db":
            if args.action == "up":
                _db_up(settings)
            elif args.action == "down":
                print("citygrid: stopped" if cluster.down(settings) else "citygrid: was not running")
            else:
                print(cluster.status(settings) if settings.embedded else "DATABASE_URL is set")
        elif args.command == "migrate":
            if args.down:
                admin_db.downgrade(settings.url_for(), args.revision)
            else:
                _ensure_database(settings)
                _migrate(settings, args.revision)
        elif args.command == "seed":
            asyncio.run(_seed(settings, args.force))
        elif args.command == "serve":
            _serve(settings, args.reload)
        elif args.command == "grids" and args.grids_command == "import":
            from grids.files import cli_import

            return asyncio.run(
                _with_session(
                    settings,
                    lambda s: cli_import(s, args.file, dry_run=args.dry_run, community=args.community),
                )
            )
        elif args.command == "grids" and args.grids_command == "export":
            from grids.files import cli_export

            return asyncio.run(
                _with_session(
                    settings, lambda s: cli_export(s, args.file, args.format, args.community, args.area)
                )
            )
        elif args.command == "grids":
            return _validate(settings, args.geojson, args.tolerance)
        elif args.command == "up":
            started = time.perf_counter()
            _db_up(settings)
            _ensure_database(settings)
            _migrate(settings)
            asyncio.run(_seed(settings, force=False))
            print(f"citygrid: ready in {time.perf_counter() - started:.1f} s")
            _serve(settings)
    except cluster.ClusterError as exc:
        print(f"citygrid: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
