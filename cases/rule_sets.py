"""Versioned dispatch rule sets (派遣规则版本): a document an administrator reads and writes.

A rule set travels as YAML (or the same shape in JSON)::

    version: 3                      # on export only; ignored when sent back
    note: 经开区环卫一体化上线
    rules:                          # tried in this order, the first that holds wins
      - name: 供水井盖 → 自来水公司
        match: {classes: ['01001']}
        unit: water                 # or  target: street_office | area_urban_management | …
        deadline_class: null        # null: the matter class's own
        priority: 1
        enabled: true

Positions come from the order (10, 20, …). Numbers in ``match`` are read as written: an
unquoted ``01001`` stays the code ``'01001'`` and ``22:00`` the time ``'22:00'`` (YAML 1.1
would read the octal 513 and the sexagesimal 1320); export quotes them anyway. The conditions
and targets are those of ``cases.rules`` (the export's header lists them).

Each change is a new version (``dispatch_rule_sets`` + its ``dispatch_rules`` rows); old
versions are never modified, because cases keep pointing at the rules that routed them
(``cases.rule_set``, ``cases.rule_id`` and the trace in the dispatch event). Exactly one
version is active; activating flips it in one transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases import rules as rules_module
from cases.deadlines import TZ
from cases.rules import Rule, load_rules, validate_match, validate_rule
from geo.errors import InvalidInput, NotFound

log = logging.getLogger("citygrid.rules")

STEP: Final = 10  # positions 10, 20, …, as the demo set
MAX_RULES: Final = 2000
MAX_NAME: Final = 500
MAX_NOTE: Final = 2000
MAX_ERRORS: Final = 100  # a pasted file of garbage names its first problems, not all of them

RULE_KEYS: Final = ("name", "match", "unit", "target", "deadline_class", "priority", "enabled")
# Keys the JSON views carry that a document sent back may keep: read and ignored.
_IGNORED_RULE_KEYS: Final = frozenset(("id", "position", "unit_name"))
_IGNORED_TOP_KEYS: Final = frozenset(("activated_at", "created_at", "created_by", "active"))

# Serialises version numbering and activation (the unique index would refuse a racing second
# active version only with an error); readers and dispatches are not blocked by it.
_LOCK_KEY: Final = 0x6369_7479_7275_6C65  # "cityrule"

_STR = "tag:yaml.org,2002:str"
_NUMBERS = frozenset(("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"))
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Problem = dict[str, Any]  # {"field", "message", "rule"?, "line"?}


@dataclass
class Document:
    """A parsed rule set document; ``lines`` are the YAML line of each rule (None for JSON)."""

    rules: list[Rule]
    note: str | None = None
    version: int | None = None
    lines: list[int | None] | None = None


# --- reading a document -------------------------------------------------------------------


def _invalid(problems: list[Problem], what: str = "the rule set is not valid") -> InvalidInput:
    shown = problems[:MAX_ERRORS]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in shown[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return InvalidInput(f"{what}: {summary}{more}", errors=shown)  # type: ignore[arg-type]


def _walk(root: yaml.Node) -> None:
    """Refuse anchors and aliases: shared nodes could blow a small text up to a huge structure."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise InvalidInput(
                "anchors and aliases (&, *) are not supported in rule sets",
                errors=[{"field": "body", "message": f"line {node.start_mark.line + 1}: alias not allowed"}],
            )
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def _get(mapping: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(mapping, yaml.MappingNode):
        for k, v in mapping.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _codes_as_written(node: yaml.Node) -> None:
    """Numbers in a match read as the text written: ``01001`` is a class code, not the octal
    number 513, and ``22:00`` a time, not the sexagesimal 1320. Booleans stay booleans."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, yaml.ScalarNode):
            if not item.style and item.tag in _NUMBERS:
                item.tag = _STR
        elif isinstance(item, yaml.SequenceNode):
            stack.extend(item.value)
        elif isinstance(item, yaml.MappingNode):
            stack.extend(value for _, value in item.value)


def _rule_nodes(root: yaml.Node) -> list[yaml.Node]:
    seq = root if isinstance(root, yaml.SequenceNode) else _get(root, "rules")
    return list(seq.value) if isinstance(seq, yaml.SequenceNode) else []


def _load_yaml(source: str) -> tuple[Any, list[int | None], list[Problem]]:
    """The data of a YAML text, each rule's line, and duplicated keys within a rule."""
    loader = _Loader(source)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, [], []
        _walk(root)
        lines: list[int | None] = []
        duplicates: list[Problem] = []
        for i, rule_node in enumerate(_rule_nodes(root)):
            lines.append(rule_node.start_mark.line + 1)
            if not isinstance(rule_node, yaml.MappingNode):
                continue
            keys = [k.value for k, _ in rule_node.value if isinstance(k, yaml.ScalarNode)]
            duplicates += [
                {"field": f"rules[{i}].{k}", "message": f"{k} is given twice", "line": lines[-1]}
                for k in sorted({k for k in keys if keys.count(k) > 1})
            ]
            match = _get(rule_node, "match")
            if isinstance(match, yaml.MappingNode):
                for _, value in match.value:
                    _codes_as_written(value)
        return loader.construct_document(root), lines, duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = exc.problem or exc.context or "syntax error"
        raise InvalidInput(
            f"the YAML cannot be read at {where}: {problem}",
            errors=[
                {
                    "field": "body",
                    "message": f"{where}: {problem}",
                    **({"line": mark.line + 1} if mark else {}),  # type: ignore[dict-item]
                }
            ],
        ) from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(
            f"the YAML cannot be read: {exc}", errors=[{"field": "body", "message": str(exc)}]
        ) from exc
    except RecursionError as exc:
        raise InvalidInput(
            "the YAML is nested too deeply", errors=[{"field": "body", "message": "nested too deeply"}]
        ) from exc
    finally:
        loader.dispose()


def _type_name(value: Any) -> str:
    return {
        type(None): "null",
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _read_rule(i: int, entry: Any, line: int | None) -> tuple[Rule | None, list[Problem]]:
    where = f"rules[{i}]"
    loc = {"line": line} if line else {}
    if not isinstance(entry, Mapping):
        return None, [{"field": where, "message": f"a rule is a mapping, not {_type_name(entry)}", **loc}]
    name = entry.get("name")
    label = {"rule": name.strip()} if isinstance(name, str) and name.strip() else {}
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append({"field": f"{where}.{key}", "message": message, **label, **loc})

    for key in entry:
        if key not in RULE_KEYS and key not in _IGNORED_RULE_KEYS:
            bad(str(key), f"unknown key {key!r} (known: {', '.join(RULE_KEYS)})")
    if not label:
        bad("name", "a rule needs a name")
    elif len(name) > MAX_NAME:
        bad("name", f"at most {MAX_NAME} characters")
    match = entry.get("match")
    if match is None:
        match = {}  # ``match:`` left empty is the catch-all
    elif not isinstance(match, Mapping):
        bad("match", f"match is a mapping of conditions, not {_type_name(match)}")
    for key in ("unit", "target", "deadline_class"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            bad(key, f"{key} is a code (text) or null, not {_type_name(value)}")
    priority = entry.get("priority", 3)
    if isinstance(priority, bool) or not isinstance(priority, int):
        bad("priority", f"priority is a whole number 1 … 5, not {_type_name(priority)}")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        bad("enabled", f"enabled is true or false, not {_type_name(enabled)}")
    if problems:
        return None, problems

    def code(key: str) -> str | None:
        value = entry.get(key)
        return value.strip() if isinstance(value, str) else None

    rule = Rule(
        id=None,
        position=(i + 1) * STEP,
        name=name.strip(),
        match=dict(match),
        unit_code=code("unit"),
        target=code("target"),
        deadline_class=code("deadline_class"),
        priority=priority,
        enabled=enabled,
    )
    return rule, []


def read_document(source: str | bytes | Any) -> Document:
    """A rule set from YAML text (or bytes), or from already parsed JSON; 422 naming each fault."""
    lines: list[int | None] = []
    problems: list[Problem] = []
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                "the rule set is not UTF-8 text", errors=[{"field": "body", "message": "not UTF-8"}]
            ) from exc
    if isinstance(source, str):
        data, lines, problems = _load_yaml(source)
    else:
        data = source
    if isinstance(data, list):  # a bare list of rules is a document without a note
        data = {"rules": data}
    if not isinstance(data, Mapping):
        raise _invalid(
            [{"field": "body", "message": f"a rule set is a mapping with 'rules', not {_type_name(data)}"}],
            "the document has the wrong shape",
        )
    problems += [
        {"field": str(k), "message": f"unknown key {k!r} (known: version, note, rules)"}
        for k in data
        if k not in ("version", "note", "rules") and k not in _IGNORED_TOP_KEYS
    ]
    note, version, entries = data.get("note"), data.get("version"), data.get("rules")
    if note is not None and not isinstance(note, str):
        problems.append({"field": "note", "message": f"note is text, not {_type_name(note)}"})
    elif note is not None and len(note) > MAX_NOTE:
        problems.append({"field": "note", "message": f"at most {MAX_NOTE} characters"})
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        problems.append({"field": "version", "message": "version is a whole number (or left out)"})
        version = None
    if not isinstance(entries, list) or not entries:
        problems.append({"field": "rules", "message": "rules is a non-empty list of rules"})
        raise _invalid(problems, "the document has the wrong shape")
    if len(entries) > MAX_RULES:
        raise _invalid([{"field": "rules", "message": f"at most {MAX_RULES} rules"}])
    rules: list[Rule] = []
    for i, entry in enumerate(entries):
        rule, found = _read_rule(i, entry, lines[i] if i < len(lines) else None)
        problems += found
        if rule is not None:
            rules.append(rule)
    if problems:
        raise _invalid(problems)
    return Document(rules, (note or "").strip() or None, version, lines or None)


def parse_document(source: str | bytes | Any) -> list[Rule]:
    """The rules of a document (YAML text or parsed JSON); see ``read_document``."""
    return read_document(source).rules


# --- validation against the reference data ------------------------------------------------

# Codes a match may name, and where they live. Keys the rules module does not (yet) know are
# refused by ``validate_match`` before they get here.
_CODES: Final[dict[str, tuple[str, str]]] = {
    "classes": ("matter class", "SELECT code::text AS code, active FROM matter_classes WHERE code = ANY(:c)"),
    "majors": (
        "major class",
        "SELECT major_code::text AS code, bool_or(active) AS active FROM matter_classes "
        "WHERE major_code = ANY(:c) GROUP BY major_code",
    ),
    "areas": ("management area", "SELECT code, true AS active FROM management_areas WHERE code = ANY(:c)"),
    "streets": (
        "street",
        "SELECT code, true AS active FROM regions WHERE level = 'street' AND code = ANY(:c)",
    ),
    "communities": (
        "community",
        "SELECT code, true AS active FROM regions WHERE level = 'community' AND code = ANY(:c)",
    ),
    "grids": ("grid", "SELECT code::text AS code, true AS active FROM unit_grids WHERE code = ANY(:c)"),
}


def _match_codes(match: Mapping[str, Any], key: str) -> list[str]:
    value = match.get(key)
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str)]


def _rule_field(problem: str) -> str:
    """Which field a problem of ``validate_rule`` (other than its match's) is about."""
    if problem.startswith("priority"):
        return "priority"
    if problem.startswith("unknown target"):
        return "target"
    return ""


async def validate(
    session: AsyncSession, rules: Sequence[Rule], lines: Sequence[int | None] | None = None
) -> list[Problem]:
    """Every problem of a rule set, each naming its rule by index (``rules[3].unit``) and name.

    The rules module's own checks (conditions, unit or target, priority), then the reference
    data: units that do not exist or are inactive, matter classes unknown or inactive, areas,
    streets, communities and grids that do not exist, deadline classes that do not exist or
    are stage limits. Empty when the set may be stored.
    """
    problems: list[Problem] = []

    def add(i: int, key: str, message: str) -> None:
        line = lines[i] if lines and i < len(lines) else None
        problems.append(
            {
                "field": f"rules[{i}].{key}" if key else f"rules[{i}]",
                "message": message,
                "rule": rules[i].name,
                **({"line": line} if line else {}),
            }
        )

    if not rules:
        return [{"field": "rules", "message": "a rule set needs at least one rule"}]
    match_ok: list[bool] = []
    for i, rule in enumerate(rules):
        of_match = validate_match(rule.match)
        match_ok.append(not of_match)
        for p in of_match:
            add(i, "match", p)
        for p in validate_rule(rule):
            if p not in of_match:
                add(i, _rule_field(p), p)

    units = {
        r.code: r.active
        for r in await session.execute(
            text("SELECT code, active FROM units WHERE code = ANY(:c)"),
            {"c": sorted({r.unit_code for r in rules if r.unit_code})},
        )
    }
    classes = sorted({r.deadline_class for r in rules if r.deadline_class})
    deadline_classes = set(
        await session.scalars(text("SELECT code FROM deadline_classes WHERE code = ANY(:c)"), {"c": classes})
    )
    known: dict[str, dict[str, bool]] = {}
    for key, (_, sql) in _CODES.items():
        wanted = sorted({c for i, r in enumerate(rules) if match_ok[i] for c in _match_codes(r.match, key)})
        if wanted:
            known[key] = {
                row.code.strip(): row.active for row in await session.execute(text(sql), {"c": wanted})
            }

    for i, rule in enumerate(rules):
        if rule.unit_code:
            if rule.unit_code not in units:
                add(i, "unit", f"unknown unit {rule.unit_code!r}")
            elif not units[rule.unit_code]:
                add(i, "unit", f"unit {rule.unit_code!r} is inactive")
        if rule.deadline_class:
            if rule.deadline_class not in deadline_classes:
                add(i, "deadline_class", f"unknown deadline class {rule.deadline_class!r}")
            elif rule.deadline_class.startswith("stage_"):
                add(i, "deadline_class", f"{rule.deadline_class!r} is a stage limit, not a handling deadline")
        if not match_ok[i]:
            continue
        for key, (what, _) in _CODES.items():
            for c in _match_codes(rule.match, key):
                if c not in known.get(key, {}):
                    add(i, f"match.{key}", f"unknown {what} {c!r}")
                elif not known[key][c]:
                    add(i, f"match.{key}", f"{what} {c!r} is inactive")
    return problems


def warnings(rules: Sequence[Rule]) -> list[str]:
    """Things an administrator should know but that do not stop a set from being stored."""
    enabled = [r for r in rules if r.enabled]
    if not enabled or enabled[-1].match:
        return [
            "the last enabled rule is not a catch-all (match: {}): cases no rule takes need a unit by hand"
        ]
    return []


async def check(session: AsyncSession, document: Document) -> None:
    """422 with every problem of the document's rules, each with its YAML line when known."""
    problems = await validate(session, document.rules, document.lines)
    if problems:
        raise _invalid(problems)


# --- storage --------------------------------------------------------------------------------


async def _lock(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


async def _flip(session: AsyncSession, version: int) -> None:
    # Two statements: one UPDATE flipping both rows could trip the partial unique index midway.
    await session.execute(
        text("UPDATE dispatch_rule_sets SET active = false WHERE active AND version <> :v"), {"v": version}
    )
    await session.execute(
        text("UPDATE dispatch_rule_sets SET active = true, activated_at = now() WHERE version = :v"),
        {"v": version},
    )


async def create_version(
    session: AsyncSession,
    rules: Sequence[Rule],
    note: str | None,
    user_id: int | None,
    activate: bool = True,
) -> int:
    """Store ``rules`` as the next version (positions from their order); its number. No commit.

    Raises ``InvalidInput`` when the rules do not validate; with ``activate`` the new version
    replaces the active one in the same transaction.
    """
    problems = await validate(session, rules)
    if problems:
        raise _invalid(problems)
    await _lock(session)
    version = await session.scalar(text("SELECT coalesce(max(version), 0) + 1 FROM dispatch_rule_sets"))
    await session.execute(
        text("INSERT INTO dispatch_rule_sets (version, note, created_by) VALUES (:v, :n, :u)"),
        {"v": version, "n": note, "u": user_id},
    )
    unit_ids = dict(
        (
            await session.execute(
                text("SELECT code, id FROM units WHERE code = ANY(:c)"),
                {"c": sorted({r.unit_code for r in rules if r.unit_code})},
            )
        ).all()
    )
    await session.execute(
        text(
            "INSERT INTO dispatch_rules "
            "(rule_set, position, name, match, unit_id, target, deadline_class, priority, enabled) "
            "VALUES (:v, :position, :name, CAST(:match AS jsonb), :unit_id, :target, :deadline_class, "
            ":priority, :enabled)"
        ),
        [
            {
                "v": version,
                "position": (i + 1) * STEP,
                "name": r.name,
                "match": json.dumps(r.match, ensure_ascii=False),
                "unit_id": unit_ids.get(r.unit_code) if r.unit_code else None,
                "target": r.target,
                "deadline_class": r.deadline_class,
                "priority": r.priority,
                "enabled": r.enabled,
            }
            for i, r in enumerate(rules)
        ],
    )
    if activate:
        await _flip(session, version)
    log.info(
        "dispatch rule set %s created by user %s (%d rules, active=%s)",
        version,
        user_id,
        len(rules),
        activate,
    )
    return version


async def activate(session: AsyncSession, version: int, user_id: int | None) -> None:
    """Make ``version`` the active rule set (404 when there is none such). No commit.

    The table keeps when a version was last activated, not by whom: the log line records who.
    """
    await _lock(session)
    exists = await session.scalar(
        text("SELECT active FROM dispatch_rule_sets WHERE version = :v"), {"v": version}
    )
    if exists is None:
        raise NotFound(f"no rule set version {version}")
    if not exists:
        await _flip(session, version)
        log.info("dispatch rule set %s activated by user %s", version, user_id)


_META_SQL = """
SELECT s.version, s.note, u.username AS created_by, s.created_at, s.activated_at, s.active,
       (SELECT count(*) FROM dispatch_rules r WHERE r.rule_set = s.version) AS rules
FROM dispatch_rule_sets s LEFT JOIN users u ON u.id = s.created_by
"""


async def history(session: AsyncSession) -> list[dict[str, Any]]:
    """Every version, newest first: who made it and when, when last activated, how many rules."""
    rows = await session.execute(text(_META_SQL + " ORDER BY s.version DESC"))
    return [dict(r._mapping) for r in rows]


async def version_meta(session: AsyncSession, version: int | None = None) -> dict[str, Any]:
    """One version's history entry (default: the active one); 404 when there is none such."""
    where = "WHERE s.version = :v" if version is not None else "WHERE s.active"
    row = (await session.execute(text(_META_SQL + where), {"v": version})).first()
    if row is None:
        raise NotFound(f"no rule set version {version}" if version is not None else "no active rule set")
    return dict(row._mapping)


def rule_entry(rule: Rule) -> dict[str, Any]:
    """A rule as the document writes it (unit or target, whichever it names)."""
    entry: dict[str, Any] = {"name": rule.name, "match": dict(rule.match)}
    if rule.target is not None and rule.unit_code is None:
        entry["target"] = rule.target
    else:
        entry["unit"] = rule.unit_code
    entry.update(deadline_class=rule.deadline_class, priority=rule.priority, enabled=rule.enabled)
    return entry


async def view(session: AsyncSession, version: int | None = None) -> dict[str, Any]:
    """A version (default: the active one) with its rules, as JSON."""
    meta = await version_meta(session, version)
    rules = await load_rules(session, meta["version"])
    return {
        **meta,
        "rules": [{"id": r.id, "position": r.position, **rule_entry(r)} for r in rules],
    }


class _FlowMap(dict):  # type: ignore[type-arg]
    """A mapping dumped on one line: ``match: {classes: ['01001']}``."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as people write YAML.
        return super().increase_indent(flow, False)


class _Code(str):
    """A code in a match, always quoted: ``01049`` is a number to other YAML readers."""


_Dumper.add_representer(
    _FlowMap, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)
)
_Dumper.add_representer(_Code, lambda d, data: d.represent_scalar(_STR, str(data), style="'"))


def _quoted(value: Any) -> Any:
    if isinstance(value, str):
        return _Code(value)
    if isinstance(value, Mapping):
        return {k: _quoted(v) for k, v in value.items()}
    return [_quoted(v) for v in value] if isinstance(value, list) else value


def dump_document(rules: Sequence[Rule], note: str | None = None, version: int | None = None) -> str:
    """The YAML of a rule set (without the comment header of ``export_yaml``)."""
    doc: dict[str, Any] = {}
    if version is not None:
        doc["version"] = version
    doc["note"] = note
    doc["rules"] = [
        {**rule_entry(r), "match": _FlowMap({k: _quoted(v) for k, v in r.match.items()})} for r in rules
    ]
    return yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100)


async def export_yaml(session: AsyncSession, version: int | None = None) -> str:
    """A version (default: the active one) as the YAML document an administrator edits."""
    meta = await version_meta(session, version)
    rules = await load_rules(session, meta["version"])
    state = "active" if meta["active"] else "not active"
    conditions = ", ".join(getattr(rules_module, "MATCH_KEYS", ()))
    targets = ", ".join(getattr(rules_module, "TARGETS", {}))
    header = [
        f"# 派遣规则 dispatch rules, version {meta['version']} ({state})",
        f"# created {meta['created_at'].astimezone(TZ):%Y-%m-%d %H:%M} by {meta['created_by'] or 'the system'}",
        "# Rules are tried in order; the first enabled rule whose conditions all hold routes the case.",
        f"# Conditions: {conditions}; targets: {targets}.",
        "# Send it back with PUT /api/v1/dispatch-rules (Content-Type: application/yaml): a new version.",
    ]
    return "\n".join(header) + "\n" + dump_document(rules, meta["note"], meta["version"])
