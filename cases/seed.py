"""Reference data of the command center: deadline classes, the catalogue, units and people.

Units and people are the Huaihua demo's (marked ``generated``); the catalogue is the
GB/T 47678.5-2026 directory shipped in cases/data/catalogue/ (see its SOURCE.md).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import hash_password

CATALOGUE = Path(__file__).parent / "data" / "catalogue"

# deadlines.md: default handling limits (处置时限) by class.
DEADLINE_CLASSES = [
    ("urgent", "紧急：2自然小时", "natural_hour", 2),
    ("2wh", "2工作小时", "working_hour", 2),
    ("4wh", "4工作小时", "working_hour", 4),
    ("1wd", "1工作日", "working_day", 1),
    ("2wd", "2工作日", "working_day", 2),
    ("5wd", "5工作日", "working_day", 5),
    ("15wd", "15工作日", "working_day", 15),
    ("20wd", "20工作日", "working_day", 20),
]

_EXPLICIT_DEADLINES = {
    **{c: "urgent" for c in ("10001", "10002")},
    **{c: "4wh" for c in ("06010", "06042", "06037", "07001")},
    **{c: "2wh" for c in ("06012", "06014")},
    **{c: "1wd" for c in ("09001", "09005", "09006", "09009", "09010")},
    **{c: "2wd" for c in ("06011",)},
    **{c: "5wd" for c in ("06017", "06045")},
    **{c: "15wd" for c in ("06025", "06026", "07003", "07006")},
    **{c: "20wd" for c in ("06001", "08016")},
}


def default_deadline_class(code: str, kind: str) -> str:
    """The deadline class deadlines.md gives a matter class; 5 working days otherwise."""
    if code in _EXPLICIT_DEADLINES:
        return _EXPLICIT_DEADLINES[code]
    if kind == "component" and code.startswith("01") and int(code[2:]) <= 23:
        return "urgent"  # manhole covers (01001–01023) missing or broken
    if code.startswith("08"):
        return "2wd"  # construction site issues
    return "5wd"


def _rows(name: str) -> list[dict[str, str]]:
    with (CATALOGUE / name).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def load_catalogue(session: AsyncSession) -> None:
    await session.execute(
        text(
            "INSERT INTO deadline_classes (code, name, unit, amount) VALUES (:c, :n, :u, :a) "
            "ON CONFLICT (code) DO NOTHING"
        ),
        [{"c": c, "n": n, "u": u, "a": a} for c, n, u, a in DEADLINE_CLASSES],
    )
    await session.execute(
        text(
            "INSERT INTO component_classes (code, major_code, major_name, name) "
            "VALUES (:code, :major_code, :major_name, :name) ON CONFLICT (code) DO UPDATE SET "
            "major_code = EXCLUDED.major_code, major_name = EXCLUDED.major_name, name = EXCLUDED.name"
        ),
        [{k: r[k] for k in ("code", "major_code", "major_name", "name")} for r in _rows("components.csv")],
    )
    await session.execute(
        text(
            "INSERT INTO matter_classes (code, kind, major_code, major_name, minor_code, name, "
            "component_class, deadline_class) VALUES (:code, :kind, :major_code, :major_name, "
            ":minor_code, :name, :component_class, :deadline_class) ON CONFLICT (code) DO UPDATE SET "
            "kind = EXCLUDED.kind, major_code = EXCLUDED.major_code, "
            "major_name = EXCLUDED.major_name, minor_code = EXCLUDED.minor_code, "
            "name = EXCLUDED.name, component_class = EXCLUDED.component_class"
        ),
        [
            {
                **{k: r[k] for k in ("code", "kind", "major_code", "major_name", "minor_code", "name")},
                "component_class": r["component_code_class"] or None,
                "deadline_class": default_deadline_class(r["code"], r["kind"]),
            }
            for r in _rows("matters.csv")
        ],
    )


@dataclass(frozen=True)
class UnitSeed:
    code: str
    name: str
    kind: str
    parent: str | None = None
    area: str | None = None
    region: str | None = None
    dispatch_center: bool = False


AREA_NAMES = {"HC": "鹤城区", "JK": "怀化经开区", "GX": "怀化高新区", "ZF": "中方县"}
_AREA_BUREAUS = {
    "HC": "鹤城区城市管理和综合执法局",
    "JK": "怀化经济技术开发区城市管理局",
    "GX": "怀化高新技术产业开发区城市管理局",
    "ZF": "中方县城市管理和综合执法局",
}

CITY_UNITS = [
    UnitSeed("cgj", "怀化市城市管理和综合执法局", "urban_management"),
    UnitSeed("zjj", "怀化市住房和城乡建设局", "housing_construction"),
    UnitSeed("water", "怀化市自来水有限公司", "water_supply"),
    UnitSeed("drainage", "怀化市城市排水有限公司", "drainage"),
    UnitSeed("power", "国网湖南省电力有限公司怀化供电分公司", "power_supply"),
    UnitSeed("telecom", "中国电信股份有限公司怀化分公司", "telecom"),
    UnitSeed("mobile", "中国移动通信集团湖南有限公司怀化分公司", "telecom"),
    UnitSeed("unicom", "中国联合网络通信有限公司怀化市分公司", "telecom"),
    UnitSeed("gas", "怀化中燃城市燃气发展有限公司", "gas"),
    UnitSeed("traffic", "怀化市公安局交通警察支队", "traffic_police"),
    UnitSeed("garden", "怀化市城市园林绿化服务中心", "landscaping", parent="cgj"),
    UnitSeed("light", "怀化市城市照明管理处", "street_lighting", parent="cgj"),
    UnitSeed("transit", "怀化市公共交通有限责任公司", "transit"),
    UnitSeed("fire", "怀化市消防救援支队", "fire"),
]

PROPERTY_COMPANIES = [
    UnitSeed("wy-01", "怀化锦绣物业服务有限公司", "property"),
    UnitSeed("wy-02", "怀化市舞水物业管理有限公司", "property"),
    UnitSeed("wy-03", "怀化天星物业服务有限公司", "property"),
    UnitSeed("wy-04", "怀化市恒泰物业管理有限公司", "property"),
    UnitSeed("wy-05", "怀化华晟物业服务有限公司", "property"),
    UnitSeed("wy-06", "湖南鹤洲物业管理有限公司怀化分公司", "property"),
]


def demo_units(streets: Iterable[tuple[str, str, str]]) -> list[UnitSeed]:
    """The demo's units; ``streets`` are (code, name, area code) of the seeded streets."""
    units = list(CITY_UNITS)
    for area, bureau in _AREA_BUREAUS.items():
        units.append(UnitSeed(f"cgj-{area.lower()}", bureau, "urban_management", "cgj", area, None, True))
        units.append(
            UnitSeed(
                f"hw-{area.lower()}",
                f"{AREA_NAMES[area]}环境卫生服务中心",
                "sanitation",
                f"cgj-{area.lower()}",
                area,
            )
        )
    for code, name, area in streets:
        office = f"{name}办事处" if name.endswith("街道") else f"{name}人民政府"
        units.append(UnitSeed(f"jd-{code}", office, "street_office", f"cgj-{area.lower()}", area, code))
    return units + PROPERTY_COMPANIES


# Who owns which component class in the demo (telecom covers are shared by three operators).
COMPONENT_OWNERS: dict[str, Sequence[str]] = {
    "01001": ["water"],
    "01025": ["water"],
    "01002": ["drainage"],
    "01003": ["drainage"],
    "01004": ["drainage"],
    "01005": ["power"],
    "01030": ["power"],
    "01048": ["power"],
    "01007": ["telecom", "mobile", "unicom"],
    "01011": ["gas"],
    "01006": ["light"],
    "01037": ["light"],
    "01060": ["light"],
    "02004": ["transit"],
    "02014": ["traffic"],
    "02017": ["traffic"],
    "04002": ["garden"],
    "01013": ["fire"],
}
AREA_OWNED = {"03001": "hw", "03005": "hw", "02012": "cgj"}  # per management area


def component_owner(class_code: str, area_code: str, serial: int) -> str | None:
    """The owner unit code of a demo component."""
    if class_code in AREA_OWNED:
        return f"{AREA_OWNED[class_code]}-{area_code.lower()}"
    owners = COMPONENT_OWNERS.get(class_code)
    return owners[serial % len(owners)] if owners else None


async def load_units(session: AsyncSession, units: Sequence[UnitSeed]) -> None:
    # Parents first: a unit's parent is listed before it.
    for unit in units:
        await session.execute(
            text(
                "INSERT INTO units (code, name, kind, parent_id, area_code, region_code, "
                "dispatch_center, generated) VALUES (:code, :name, :kind, "
                "(SELECT id FROM units WHERE code = :parent), :area, :region, :dc, true) "
                "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, "
                "parent_id = EXCLUDED.parent_id, area_code = EXCLUDED.area_code, "
                "region_code = EXCLUDED.region_code, dispatch_center = EXCLUDED.dispatch_center"
            ),
            {
                "code": unit.code,
                "name": unit.name,
                "kind": unit.kind,
                "parent": unit.parent,
                "area": unit.area,
                "region": unit.region,
                "dc": unit.dispatch_center,
            },
        )


_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐向舒滕蒋杨田"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玲辉鹏飞婷俊凯"


def _person_name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))


@dataclass(frozen=True)
class PersonSeed:
    username: str
    display_name: str
    roles: tuple[str, ...]
    unit: str | None = None


COLLECTORS = 78
OPERATORS = 13
SUPERVISORS = 3


def demo_people(units: Sequence[UnitSeed], seed: int = 4312) -> list[PersonSeed]:
    rng = random.Random(seed)
    people = [
        PersonSeed(f"collector{i:02d}", _person_name(rng), ("collector",)) for i in range(1, COLLECTORS + 1)
    ]
    people += [
        PersonSeed(f"operator{i:02d}", _person_name(rng), ("operator",)) for i in range(1, OPERATORS + 1)
    ]
    people += [
        PersonSeed(f"supervisor{i:02d}", _person_name(rng), ("supervisor",))
        for i in range(1, SUPERVISORS + 1)
    ]
    people.append(PersonSeed("planner01", _person_name(rng), ("planner",)))
    people.append(PersonSeed("admin", "系统管理员", ("admin",)))
    people += [PersonSeed(f"unit-{u.code}", u.name, ("unit",), u.code) for u in units]
    return people


async def load_people(session: AsyncSession, people: Sequence[PersonSeed], password: str | None) -> int:
    """Insert the people that do not exist yet (existing accounts keep their passwords)."""
    existing = set(await session.scalars(text("SELECT username FROM users")))
    new = [p for p in people if p.username not in existing]
    if not new:
        return 0
    with ThreadPoolExecutor(max_workers=4) as pool:  # argon2 releases the GIL
        hashes = list(pool.map(lambda _: hash_password(password) if password else None, new))
    await session.execute(
        text(
            "INSERT INTO users (username, display_name, password_hash, roles, unit_id) "
            "VALUES (:u, :d, :h, :r, (SELECT id FROM units WHERE code = :unit)) "
            "ON CONFLICT (username) DO NOTHING"
        ),
        [
            {"u": p.username, "d": p.display_name, "h": h, "r": list(p.roles), "unit": p.unit}
            for p, h in zip(new, hashes, strict=True)
        ],
    )
    return len(new)
