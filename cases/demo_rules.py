"""The Huaihua demo's dispatch rules (派遣规则), as data.

Specific before general: safety first (gas, fire), then the places with an owner of their own
(a property-managed compound's cleaning and greening is its property company's, a park's its
manager's), the exceptions of one place (经开区's contracted sanitation, 城中街道's delegated
enforcement and who covers it on rest days), then the owner the component register names for
a component, then the owners of utilities, traffic, green space and sanitation by class (for
components not in the register or without an owner), then the district urban management
bureaus' enforcement (with the road sections under a maintenance contract and the night-time
noise duty), and last the catch-all to the street office of the location (属地兜底). A rule
without a deadline class keeps the matter class's own (so missing covers stay ``urgent``).
Generated for the demo, as the units are; an administrator edits the table, not this file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.rules import Rule, validate_rule

STEP = 10  # positions 10, 20, …: room to insert a rule between two without renumbering


@dataclass(frozen=True)
class RuleSeed:
    name: str
    match: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None
    target: str | None = None
    deadline_class: str | None = None
    priority: int = 3
    # Set for a rule inserted between two others (15 between 10 and 20), so that the rules
    # after it keep their positions and a reseed updates the stored rows in place.
    position: int | None = None


# Cleaning and greening, which a property company or a park's manager does on its own ground.
_PROPERTY_CLASSES = (
    "06010", "06011", "06012", "06014", "06017", "06018", "06020", "06021",
    "06035", "06036", "06037", "06041", "06042",
)  # fmt: skip
# Covers and gratings (井盖、箅子), which the register gives to their owners.
_COVER_CLASSES = (
    "01001", "01002", "01003", "01004", "01005", "01006", "01007", "01008", "01009", "01010",
    "01012", "01014", "01015", "01017", "01018", "01019", "01020", "01022", "01023", "01026",
)  # fmt: skip


def _classes(*codes: str) -> dict[str, Any]:
    return {"classes": list(codes)}


DEMO_RULES: list[RuleSeed] = [
    # Safety first: gas and fire go to their services whatever the place.
    RuleSeed(
        "燃气井盖、调压站（箱）、露天燃气管道、输气标志 → 中燃城市燃气（安全隐患）",
        _classes("01011", "01021", "01036", "01049", "01057"),
        unit="gas",
        priority=1,
    ),
    RuleSeed("消防设施异常 → 市消防救援支队", _classes("01013"), unit="fire", priority=1),
    RuleSeed(
        "占用消防通道 → 市消防救援支队（4工作小时）",
        _classes("09012"),
        unit="fire",
        deadline_class="4wh",
        priority=1,
    ),
    # Places with an owner of their own (责任区域): inside a property-managed compound its
    # property company keeps it clean and green (物业管理区域), a park its manager; before the
    # area-wide contracts below, which cover public space only.
    RuleSeed(
        "物业管理区域内的垃圾、保洁、绿化事项 → 物业服务企业",
        {"kind": "event", "inside_area_kind": "property_compound", "classes": list(_PROPERTY_CLASSES)},
        target="area_owner",
        position=33,
    ),
    RuleSeed(
        "公园内的垃圾、保洁、绿化、公园秩序 → 公园管理单位",
        {"kind": "event", "inside_area_kind": "park", "classes": [*_PROPERTY_CLASSES, "06047"]},
        target="area_owner",
        position=35,
    ),
    RuleSeed(
        "滨河风光带内的河滩、水域、绿地事项（以区域登记的事项为准） → 河岸管理单位",
        {"kind": "event", "inside_area_kind": "river_bank"},
        target="area_owner",
        position=37,
    ),
    # Exceptions of one place, before the general rules they override.
    RuleSeed(
        "经开区环卫一体化（市场化保洁）：暴露垃圾、满溢、道路不洁、遗撒 → 经开区环卫中心（合同时限2工作小时）",
        {"areas": ["JK"], "classes": ["06010", "06042", "06012", "06014"]},
        unit="hw-jk",
        deadline_class="2wh",
        priority=2,
    ),
    RuleSeed(
        "经开区环卫一体化：乱堆杂物、废弃家具、绿化弃料 → 经开区环卫中心",
        {"areas": ["JK"], "classes": ["06018", "06035", "06036"]},
        unit="hw-jk",
    ),
    RuleSeed(
        "城中街道休息日：游商、夜市、占道经营 → 区城管局（街道执法队休息日不值班）",
        {"streets": ["431202001"], "classes": ["09001", "09002", "09006"], "day_type": "rest_day"},
        target="area_urban_management",
        position=55,
    ),
    RuleSeed(
        "城中街道综合行政执法（赋权街道）：游商、夜市、占道经营 → 城中街道办事处",
        {"streets": ["431202001"], "classes": ["09001", "09002", "09006"]},
        unit="jd-431202001",
    ),
    # The component register (部件普查) names the owner of each component: it decides before
    # the class rules below, which stay for components not registered or without an owner
    # (telecom covers, for one, are shared by three operators). The target falls through
    # when the case has no such owner, so no ``component_owner: true`` condition is needed
    # (and the rule set's YAML, which reads match values as written, round-trips).
    RuleSeed(
        "井盖类部件 → 部件登记的权属单位",
        {"kind": "component", "classes": list(_COVER_CLASSES)},
        target="component_owner",
        priority=1,
        position=63,
    ),
    RuleSeed(
        "其他部件 → 部件登记的权属单位",
        {"kind": "component"},
        target="component_owner",
        priority=2,
        position=66,
    ),
    # Utilities: covers first (priority 1, urgent by class), then their other facilities.
    RuleSeed("供水井盖 → 自来水公司", _classes("01001"), unit="water", priority=1),
    RuleSeed(
        "供水器（消火栓）、水塔、水鹤 → 自来水公司",
        _classes("01025", "01063", "01068"),
        unit="water",
        priority=2,
    ),
    RuleSeed(
        "污水、雨水、化粪池、中水井盖及雨水箅子 → 城市排水公司",
        _classes("01002", "01003", "01004", "01018", "01019"),
        unit="drainage",
        priority=1,
    ),
    RuleSeed(
        "排水泵站、雨污水排放口 → 城市排水公司", _classes("01072", "01073"), unit="drainage", priority=2
    ),
    RuleSeed("电力、电缆井盖 → 怀化供电分公司", _classes("01005", "01017"), unit="power", priority=1),
    RuleSeed(
        "电力设施、标识牌、立杆、高压铁塔、变压器（箱） → 怀化供电分公司",
        _classes("01028", "01029", "01030", "01047", "01048"),
        unit="power",
        priority=2,
    ),
    RuleSeed(
        "通信、电视、网络井盖 → 电信怀化分公司（牵头协调移动、联通）",
        _classes("01007", "01008", "01009"),
        unit="telecom",
        priority=1,
    ),
    RuleSeed(
        "通信交接箱、通信立杆、基站 → 电信怀化分公司（牵头协调移动、联通）",
        _classes("01027", "01031", "01062"),
        unit="telecom",
    ),
    RuleSeed(
        "架空线缆脱落 → 电信怀化分公司（牵头；涉电力线的转供电公司）",
        _classes("10002"),
        unit="telecom",
        priority=1,
    ),
    RuleSeed("路灯井盖 → 城市照明管理处", _classes("01006"), unit="light", priority=1),
    RuleSeed(
        "路灯、地灯、景观灯、路灯配电箱、综合杆 → 城市照明管理处",
        _classes("01037", "01038", "01039", "01060", "01077"),
        unit="light",
    ),
    RuleSeed("信号灯电源井盖 → 市公安局交警支队", _classes("01015"), unit="traffic", priority=1),
    RuleSeed("公交井盖 → 市公交公司", _classes("01020"), unit="transit", priority=1),
    RuleSeed("园林井盖 → 园林绿化服务中心", _classes("01014"), unit="garden", priority=1),
    RuleSeed(
        "权属不明井盖（公安、热力、特殊、不明）、沟槽盖板 → 区城管局（市政维护先行处置）",
        _classes("01010", "01012", "01022", "01023", "01026"),
        target="area_urban_management",
        priority=1,
    ),
    # Traffic and transit.
    RuleSeed(
        "交通信号灯、标志标线、护栏、防撞桶、电子眼等 → 市公安局交警支队",
        _classes(
            "02010",
            "02011",
            "02014",
            "02015",
            "02016",
            "02017",
            "02018",
            "02019",
            "02033",
            "02043",
            "01050",
            "06016",
        ),
        unit="traffic",
        priority=2,
    ),
    RuleSeed("公交站设施、公交立杆 → 市公交公司", _classes("02004", "01032"), unit="transit"),
    RuleSeed(
        "路名牌、地名牌、天桥、地下通道、桥梁 → 区城管局（市政设施）",
        _classes("02012", "02013", "02006", "02007", "02008", "02009"),
        target="area_urban_management",
    ),
    # Green space (园林绿化).
    RuleSeed(
        "园林绿化部件（行道树、古树、绿地、护栏、座椅等） → 园林绿化服务中心",
        {"majors": ["04"], "kind": "component"},
        unit="garden",
    ),
    RuleSeed(
        "绿地脏乱、绿化弃料、病虫害、非法伐树、占绿毁绿、公园秩序 → 园林绿化服务中心",
        _classes("06017", "06018", "06021", "06022", "06045", "06047"),
        unit="garden",
    ),
    # Sanitation (环卫) by management area.
    RuleSeed(
        "道路积雪、结冰 → 辖区环卫中心（除雪除冰）", _classes("10001"), target="area_sanitation", priority=1
    ),
    RuleSeed(
        "暴露垃圾、积存渣土、道路不洁、遗撒、动物尸体、满溢等 → 辖区环卫中心",
        _classes("06010", "06011", "06012", "06014", "06015", "06020", "06037", "06041", "06042"),
        target="area_sanitation",
        priority=2,
    ),
    RuleSeed(
        "公厕、垃圾箱、垃圾间、化粪池等环卫设施 → 辖区环卫中心",
        _classes("03001", "03002", "03003", "03004", "03005", "03014", "03015", "03016"),
        target="area_sanitation",
    ),
    # Construction: illegal building and roads are the bureaus'; sites are the housing bureau's.
    RuleSeed(
        "违法建设（私搭乱建、无证建设） → 区城管局（控违拆违，20工作日）",
        _classes("06001", "08016"),
        target="area_urban_management",
        deadline_class="20wd",
    ),
    RuleSeed(
        "施工工地范围内的施工管理类事项 → 工地监管单位",
        {"inside_area_kind": "construction_site", "majors": ["08"]},
        target="area_owner",
        position=305,
    ),
    RuleSeed(
        "无证掘路、施工占道、渣土运输撒漏 → 区城管局",
        _classes("08002", "08003", "08011", "08012"),
        target="area_urban_management",
    ),
    RuleSeed("建筑工地文明施工（扬尘、围挡、噪声、物料等） → 市住建局", {"majors": ["08"]}, unit="zjj"),
    # Enforcement of the district urban management bureaus (城管执法).
    RuleSeed(
        "户外广告、牌匾标识、宣传栏设施 → 区城管局",
        _classes("03006", "03007", "03008"),
        target="area_urban_management",
    ),
    RuleSeed("违规广告、小广告、牌匾标识 → 区城管局", {"majors": ["07"]}, target="area_urban_management"),
    RuleSeed(
        "街面秩序（游商、占道、店外经营、乱停放等） → 区城管局",
        {"majors": ["09"]},
        target="area_urban_management",
    ),
    RuleSeed(
        "市容执法（违章接坡、沿街晾挂、空调低挂、油烟、露天烧烤、乱排污水、私设地锁等） → 区城管局",
        _classes(
            "06002",
            "06003",
            "06006",
            "06007",
            "06008",
            "06009",
            "06019",
            "06027",
            "06029",
            "06030",
            "06039",
            "06040",
        ),
        target="area_urban_management",
    ),
    RuleSeed(
        "道路养护标段内的道路设施损坏 → 标段养护责任单位（市管道路归市城管局）",
        {
            "inside_area_kind": "road_contract",
            "classes": ["06013", "06048", "06049", "06050", "06051", "06052"],
        },
        target="area_owner",
        priority=2,
        position=365,
    ),
    RuleSeed(
        "市政道路设施（道路破损、边坡、台阶、路缘石、盲道、无障碍） → 区城管局（市政维护）",
        _classes("06013", "06048", "06049", "06050", "06051", "06052", "02034"),
        target="area_urban_management",
        priority=2,
    ),
    RuleSeed(
        "夜间（22:00–06:00）噪声扰民 → 区城管局（夜间执法值班）；白天属地处置",
        {"classes": ["06028"], "time_of_day": {"from": "22:00", "to": "06:00"}},
        target="area_urban_management",
        priority=2,
        position=375,
    ),
    # 属地兜底: whatever no rule above took goes to the street office (街道/乡镇) of its location.
    RuleSeed("属地兜底 → 所在街道（乡镇）", {}, target="street_office"),
]


def _positions(seeds: list[RuleSeed]) -> list[int]:
    """10, 20, … for the rules without a position of their own; in list order, or ValueError."""
    out, n = [], 0
    for s in seeds:
        if s.position is None:
            n += 1
        out.append(s.position if s.position is not None else n * STEP)
    if out != sorted(set(out)):
        raise ValueError(f"demo rule positions must rise along the list: {out}")
    return out


def demo_rules() -> list[Rule]:
    """The demo set as rules in position order (10, 20, … and those between; no ids yet)."""
    return [
        Rule(None, position, s.name, s.match, s.unit, s.target, s.deadline_class, s.priority, True)
        for position, s in zip(_positions(DEMO_RULES), DEMO_RULES, strict=True)
    ]


_UPSERT = text("""
INSERT INTO dispatch_rules (rule_set, position, name, match, unit_id, target, deadline_class, priority, enabled)
VALUES (:rule_set, :position, :name, CAST(:match AS jsonb), :unit_id, :target, :deadline_class, :priority, true)
ON CONFLICT (rule_set, position) DO UPDATE SET
    name = EXCLUDED.name, match = EXCLUDED.match, unit_id = EXCLUDED.unit_id, target = EXCLUDED.target,
    deadline_class = EXCLUDED.deadline_class, priority = EXCLUDED.priority, enabled = true
""")


async def load_demo_rules(session: AsyncSession, rule_set: int = 1) -> int:
    """Replace ``rule_set`` with the demo rules in the caller's transaction; how many. No commit.

    Rows are updated in place by position, so a second run changes nothing and cases keep
    their ``rule_id``. Raises ``ValueError`` on an invalid rule, an unknown unit or class.
    """
    rules = demo_rules()
    problems = [f"{r.name}: {p}" for r in rules for p in validate_rule(r)]
    codes = sorted({r.unit_code for r in rules if r.unit_code})
    rows = await session.execute(text("SELECT code, id FROM units WHERE code = ANY(:c)"), {"c": codes})
    unit_ids = {r.code: r.id for r in rows}
    problems += [f"unknown unit {c!r}" for c in codes if c not in unit_ids]
    known = {c.strip() for c in await session.scalars(text("SELECT code FROM matter_classes"))}
    problems += [
        f"{r.name}: unknown matter class {c}"
        for r in rules
        for c in r.match.get("classes", [])
        if c not in known
    ]
    if problems:
        raise ValueError("demo dispatch rules: " + "; ".join(problems))

    await session.execute(
        text(
            "INSERT INTO dispatch_rule_sets (version, note) VALUES (:s, '怀化示范规则') ON CONFLICT DO NOTHING"
        ),
        {"s": rule_set},
    )
    await session.execute(
        text("DELETE FROM dispatch_rules WHERE rule_set = :s AND position <> ALL(:p)"),
        {"s": rule_set, "p": [r.position for r in rules]},
    )
    await session.execute(
        _UPSERT,
        [
            {
                "rule_set": rule_set,
                "position": r.position,
                "name": r.name,
                "match": json.dumps(r.match, ensure_ascii=False),
                "unit_id": unit_ids.get(r.unit_code) if r.unit_code else None,
                "target": r.target,
                "deadline_class": r.deadline_class,
                "priority": r.priority,
            }
            for r in rules
        ],
    )
    return len(rules)
