"""Authentication and roles: token expiry and revocation, sign-in throttling, the order of checks
(401 → 403 → 404 → 422 → 409) and the admin API for users.

Everything that signs in wrongly or changes users runs on a database of its own, so the
session database other modules share keeps its demo users and clean login_failures.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, File, UploadFile
from pydantic import BaseModel
from sqlalchemy import text

from api.admin_db import dsn
from api.auth import AuthRoute, CurrentUser, require
from api.copies import Copies
from api.db import Database
from api.routers import admin, components
from api.settings import Settings
from cases.accounts import principal_for_token
from tests.conftest import PASSWORD, make_app

BASE = "http://citygrid.test"
NEW_PASSWORD = "a-long-new-passphrase"

# A tiny router standing for any AuthRoute router: a JSON body behind a role, an upload.
probe = APIRouter(prefix="/probe", route_class=AuthRoute)


class ProbeBody(BaseModel):
    n: int


@probe.post("/json", dependencies=[require("planner", "admin")])
async def probe_json(body: ProbeBody) -> dict[str, int]:
    return {"n": body.n}


@probe.post("/upload")
async def probe_upload(user: CurrentUser, file: Annotated[UploadFile, File()]) -> dict[str, str]:
    return {"user": user.username, "file": file.filename or ""}


def _paths(app: FastAPI) -> set[str]:
    app.openapi_schema = None  # built afresh, and not cached before every router is in
    paths = set(app.openapi()["paths"])
    app.openapi_schema = None
    return paths


@pytest.fixture(scope="module")
async def own_app(settings: Settings, own_db: Database) -> AsyncIterator[FastAPI]:
    app = make_app(settings, own_db)
    if "/api/v1/admin/users" not in _paths(app):  # until api/app.py registers it
        app.include_router(admin.router)
    app.include_router(probe)
    # With the principals' copy, as served: every revocation below must reach it.
    app.state.copies = await Copies(dsn(own_db.url)).start()
    app.state.copies.attach(app)
    yield app
    await app.state.copies.stop()


Connect = Callable[..., Any]


@pytest.fixture(scope="module")
def connect(own_app: FastAPI) -> Connect:
    """``async with connect("10.0.0.5") as c:`` → a client of the module's app from that address."""

    @asynccontextmanager
    async def client(address: str = "10.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=own_app, client=(address, 1234))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            yield c

    return client


async def sign_in(c: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    return await c.post("/api/v1/auth/token", data={"username": username, "password": password})


async def bearer(c: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = await sign_in(c, username, password)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


Sql = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="module")
def sql(own_db: Database, own_app: FastAPI) -> Sql:
    async def run(statement: str, **params: Any) -> Any:
        async with own_db.sessions() as session:
            result = await session.execute(text(statement), params)
            await session.commit()
        await own_app.state.copies.listener.sync()  # as another process would see it, once notified
        return result

    return run


def _token_hash(headers: dict[str, str]) -> bytes:
    return hashlib.sha256(headers["Authorization"].removeprefix("Bearer ").encode()).digest()


# --- tokens ----------------------------------------------------------------------------------


async def test_logout_revokes_only_the_callers_token(connect: Connect) -> None:
    async with connect() as c:
        first, second = await bearer(c, "operator05"), await bearer(c, "operator05")
        assert (await c.get("/api/v1/me", headers=first)).status_code == 200
        r = await c.post("/api/v1/auth/logout", headers=first)
        assert r.status_code == 204 and r.content == b""
        r = await c.get("/api/v1/me", headers=first)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert r.headers["content-type"] == "application/problem+json"
        assert (await c.post("/api/v1/auth/logout", headers=first)).status_code == 401
        assert (await c.get("/api/v1/me", headers=second)).status_code == 200
        assert (await c.post("/api/v1/auth/logout")).status_code == 401


async def test_expired_token_is_401(connect: Connect, sql: Sql) -> None:
    async with connect() as c:
        headers = await bearer(c, "operator06")
        assert (await c.get("/api/v1/me", headers=headers)).status_code == 200
        await sql(
            "UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = :h",
            h=_token_hash(headers),
        )
        r = await c.get("/api/v1/me", headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"


async def test_unit_user_principal_knows_its_unit(connect: Connect, own_db: Database) -> None:
    async with connect() as c:
        headers = await bearer(c, "unit-water")
    async with own_db.sessions() as session:
        principal = await principal_for_token(session, headers["Authorization"].removeprefix("Bearer "))
    assert principal is not None and principal.unit_code == "water" and principal.unit_id is not None


# --- throttling --------------------------------------------------------------------------------


async def test_five_failures_throttle_that_user_from_that_address_only(connect: Connect, sql: Sql) -> None:
    async with connect("10.0.0.5") as c:
        for _ in range(5):
            r = await sign_in(c, "collector70", "wrong-password")
            assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
        r = await sign_in(c, "collector70")  # the right password, too late
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "too_many_attempts"
        assert 0 < int(r.headers["retry-after"]) <= 300
        assert (await sign_in(c, "collector71")).status_code == 200  # another user, same address
    async with connect("10.0.0.6") as c:
        assert (await sign_in(c, "collector70")).status_code == 200  # same user, another address

    # Once the failures are older than five minutes the pair may sign in again.
    await sql(
        "UPDATE login_failures SET at = at - interval '5 minutes 1 second' "
        "WHERE username = 'collector70' AND address = '10.0.0.5'"
    )
    async with connect("10.0.0.5") as c:
        assert (await sign_in(c, "collector70")).status_code == 200


async def test_parallel_failures_all_count(connect: Connect) -> None:
    async with connect("10.0.0.7") as c:
        replies = await asyncio.gather(*(sign_in(c, "collector72", f"wrong-{i}") for i in range(5)))
        assert [r.status_code for r in replies] == [401] * 5
        assert (await sign_in(c, "collector72")).status_code == 429


async def test_parallel_guesses_cannot_pass_the_limit(connect: Connect) -> None:
    async with connect("10.0.0.8") as c:
        for i in range(4):
            assert (await sign_in(c, "collector73", f"wrong-{i}")).status_code == 401
        # Four guesses at once with one left: exactly one is checked, the others refused.
        replies = await asyncio.gather(*(sign_in(c, "collector73", f"guess-{i}") for i in range(4)))
        assert sorted(r.status_code for r in replies) == [401, 429, 429, 429]


async def test_success_forgives_earlier_failures(connect: Connect) -> None:
    async with connect("10.0.0.9") as c:
        for _ in range(4):
            assert (await sign_in(c, "collector74", "wrong-password")).status_code == 401
        assert (await sign_in(c, "collector74")).status_code == 200
        for _ in range(4):
            assert (await sign_in(c, "collector74", "wrong-password")).status_code == 401
        assert (await sign_in(c, "collector74")).status_code == 200


# --- order of checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "allowed", "denied"),
    [("/api/v1/components", "planner01", "collector01"), ("/api/v1/admin/users", "admin", "planner01")],
)
async def test_bad_body_is_401_then_403_then_422(
    connect: Connect, path: str, allowed: str, denied: str
) -> None:
    bad = {"code": "not-a-code", "unexpected": True}
    async with connect() as c:
        r = await c.post(path, json=bad)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        r = await c.post(path, json=bad, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401
        r = await c.post(path, json=bad, headers=await bearer(c, denied))
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        r = await c.post(path, json=bad, headers=await bearer(c, allowed))
        assert r.status_code == 422 and r.json()["code"] == "invalid_input"


async def test_auth_route_checks_before_the_body_is_parsed(connect: Connect) -> None:
    json_type = {"Content-Type": "application/json"}
    async with connect() as c:
        collector = await bearer(c, "collector02")
        for path, who in (("/probe/json", "planner01"), ("/api/v1/admin/users", "admin")):
            r = await c.post(path, content=b'{"n": ', headers=json_type)  # malformed JSON
            assert r.status_code == 401
            r = await c.post(path, content=b'{"n": ', headers={**json_type, **collector})
            assert r.status_code == 403
            r = await c.post(path, content=b'{"n": ', headers={**json_type, **await bearer(c, who)})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input"
        # A broken multipart body is not even looked at before the caller is known.
        broken = {"Content-Type": "multipart/form-data; boundary=x"}
        r = await c.post("/probe/upload", content=b"--x\r\nnot a part", headers=broken)
        assert r.status_code == 401
        headers = await bearer(c, "unit-water")
        r = await c.post("/probe/upload", files={"file": ("a.txt", b"hello")}, headers=headers)
        assert r.json() == {"user": "unit-water", "file": "a.txt"}


async def test_components_malformed_json_is_401_before_422(connect: Connect) -> None:
    assert all(isinstance(r, AuthRoute) for r in components.router.routes)
    async with connect() as c:
        r = await c.post("/api/v1/components", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 401


async def test_unknown_user_is_404_before_a_bad_body(connect: Connect) -> None:
    async with connect() as c:
        headers = await bearer(c, "admin")
        r = await c.patch("/api/v1/admin/users/nobody-here", json={"roles": ["wizard"]}, headers=headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        r = await c.post("/api/v1/admin/users/nobody-here/password", json={"password": "x"}, headers=headers)
        assert r.status_code == 404


# --- admin API ---------------------------------------------------------------------------------


def _admin_calls() -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", "/api/v1/admin/users", {"username": "x1", "display_name": "x", "roles": ["collector"],
                                         "password": NEW_PASSWORD}),
        ("GET", "/api/v1/admin/users", None),
        ("GET", "/api/v1/admin/users/collector01", None),
        ("PATCH", "/api/v1/admin/users/collector01", {"disabled": True}),
        ("POST", "/api/v1/admin/users/collector01/password", {"password": NEW_PASSWORD}),
    ]  # fmt: skip


async def test_admin_routes_are_for_admins_only(connect: Connect, own_app: FastAPI) -> None:
    admin_paths = {path for path in _paths(own_app) if path.startswith("/api/v1/admin")}
    assert admin_paths == {"/api/v1/admin/users", "/api/v1/admin/users/{username}",
                           "/api/v1/admin/users/{username}/password"}  # fmt: skip
    async with connect() as c:
        for username in ("operator01", "supervisor01", "planner01", "unit-water", "collector01"):
            headers = await bearer(c, username)
            for method, path, body in _admin_calls():
                r = await c.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (username, method, path, r.text)
        for method, path, body in _admin_calls():
            assert (await c.request(method, path, json=body)).status_code == 401
        assert (await c.get("/api/v1/me", headers=await bearer(c, "collector01"))).status_code == 200


async def test_user_lifecycle(connect: Connect) -> None:
    async with connect() as c:
        admin_headers = await bearer(c, "admin")
        new = {
            "username": "li.wei",
            "display_name": " 李伟 ",
            "roles": ["collector"],
            "password": NEW_PASSWORD,
        }
        r = await c.post("/api/v1/admin/users", json=new, headers=admin_headers)
        assert r.status_code == 201, r.text
        user = r.json()
        assert r.headers["location"] == "/api/v1/admin/users/li.wei"
        assert user["username"] == "li.wei" and user["display_name"] == "李伟"
        assert user["roles"] == ["collector"] and user["unit"] is None and user["disabled"] is False
        assert not any("password" in key for key in user)
        token = await bearer(c, "li.wei", NEW_PASSWORD)
        assert (await c.get("/api/v1/me", headers=token)).json()["username"] == "li.wei"

        r = await c.post("/api/v1/admin/users", json=new, headers=admin_headers)
        assert r.status_code == 409 and r.json()["code"] == "username_taken"
        r = await c.get("/api/v1/admin/users/li.wei", headers=admin_headers)
        assert r.status_code == 200 and r.json() == user

        # Disabling revokes the user's tokens and refuses sign-in; enabling does not revive tokens.
        r = await c.patch("/api/v1/admin/users/li.wei", json={"disabled": True}, headers=admin_headers)
        assert r.status_code == 200 and r.json()["disabled"] is True
        assert (await c.get("/api/v1/me", headers=token)).status_code == 401
        assert (await sign_in(c, "li.wei", NEW_PASSWORD)).status_code == 401
        r = await c.patch("/api/v1/admin/users/li.wei", json={"disabled": False}, headers=admin_headers)
        assert r.status_code == 200 and r.json()["disabled"] is False
        assert (await c.get("/api/v1/me", headers=token)).status_code == 401
        token = await bearer(c, "li.wei", NEW_PASSWORD)

        # A password reset revokes the tokens; the old password stops working, the new one works.
        r = await c.post(
            "/api/v1/admin/users/li.wei/password",
            json={"password": "another-passphrase"},
            headers=admin_headers,
        )
        assert r.status_code == 204
        assert (await c.get("/api/v1/me", headers=token)).status_code == 401
        assert (await sign_in(c, "li.wei", NEW_PASSWORD)).status_code == 401
        assert (await sign_in(c, "li.wei", "another-passphrase")).status_code == 200
        r = await c.post(
            "/api/v1/admin/users/li.wei/password", json={"password": "short"}, headers=admin_headers
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "password"


async def test_unit_users_and_input_errors(connect: Connect) -> None:
    async with connect() as c:
        headers = await bearer(c, "admin")

        async def create(**fields: Any) -> httpx.Response:
            body = {"username": "wang.fang", "display_name": "王芳", "password": NEW_PASSWORD, **fields}
            return await c.post("/api/v1/admin/users", json=body, headers=headers)

        def fields_of(r: httpx.Response) -> list[str]:
            assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
            return [e["field"] for e in r.json()["errors"]]

        assert fields_of(await create(roles=["unit"], unit="no-such-unit")) == ["unit"]
        assert fields_of(await create(roles=["unit"])) == ["unit"]
        assert fields_of(await create(roles=["operator"], unit="water")) == ["unit"]
        assert "roles" in fields_of(await create(roles=[]))[0]
        assert fields_of(await create(roles=["wizard"]))[0].startswith("roles")
        assert fields_of(await create(roles=["operator"], password="short")) == ["password"]
        assert "username" in fields_of(await create(roles=["operator"], username="Has Space"))
        # Input errors come before the state conflict of a taken name.
        assert fields_of(await create(roles=["unit"], unit="nowhere", username="admin")) == ["unit"]

        r = await create(roles=["unit", "operator", "unit"], unit="water")
        assert r.status_code == 201, r.text
        assert r.json()["roles"] == ["operator", "unit"]
        assert r.json()["unit"] == {"code": "water", "name": "怀化市自来水有限公司"}
        me = (await c.get("/api/v1/me", headers=await bearer(c, "wang.fang", NEW_PASSWORD))).json()
        assert me["unit"]["code"] == "water"

        listed = (await c.get("/api/v1/admin/users", params={"role": "unit"}, headers=headers)).json()
        names = {u["username"] for u in listed}
        assert {"wang.fang", "unit-water"} <= names and "operator01" not in names
        assert all("unit" in u["roles"] and u["unit"] for u in listed)
        assert all(not any("password" in key for key in u) for u in listed)
        water = (await c.get("/api/v1/admin/users", params={"unit": "water"}, headers=headers)).json()
        assert {u["username"] for u in water} == {"wang.fang", "unit-water"}
        r = await c.get("/api/v1/admin/users", params={"role": "wizard"}, headers=headers)
        assert r.status_code == 422
        assert (await c.get("/api/v1/admin/users/nobody-here", headers=headers)).status_code == 404

        # Dropping the role unit unbinds the unit; binding a non-unit user is refused.
        path = "/api/v1/admin/users/wang.fang"
        r = await c.patch(path, json={"roles": ["operator"]}, headers=headers)
        assert r.status_code == 200 and r.json()["unit"] is None and r.json()["roles"] == ["operator"]
        assert fields_of(await c.patch(path, json={"unit": "water"}, headers=headers)) == ["unit"]
        r = await c.patch(
            path, json={"roles": ["unit"], "unit": "power", "display_name": "王芳（电力）"}, headers=headers
        )
        assert (
            r.status_code == 200
            and r.json()["unit"]["code"] == "power"
            and r.json()["display_name"] == "王芳（电力）"
        )
        assert fields_of(await c.patch(path, json={"display_name": None}, headers=headers)) == [
            "display_name"
        ]
        assert fields_of(await c.patch(path, json={"password": NEW_PASSWORD}, headers=headers)) == [
            "password"
        ]


async def test_an_admin_cannot_lock_themselves_out(connect: Connect) -> None:
    async with connect() as c:
        headers = await bearer(c, "admin")
        for change in ({"disabled": True}, {"roles": ["planner"]}):
            r = await c.patch("/api/v1/admin/users/admin", json=change, headers=headers)
            assert r.status_code == 409 and r.json()["code"] == "self_lockout"
        assert (await c.get("/api/v1/admin/users/admin", headers=headers)).json()["roles"] == ["admin"]
