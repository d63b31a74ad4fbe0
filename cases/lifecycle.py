"""The closed loop of CJJ/T 106 / GB/T 30428.8 as data: statuses, actions, roles, preconditions.

One table says, for every action, on what (report or case), from which statuses, to which
status, and who may do it; ``cases.workflow`` carries actions out, nothing else decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from geo.errors import Conflict

REPORT_STATUSES = ("received", "verifying", "filed", "rejected", "merged")
CASE_STATUSES = ("filed", "dispatched", "returned", "suspended", "handled", "checked", "closed", "cancelled")
OPEN_CASE = frozenset(("filed", "dispatched", "returned", "suspended", "handled", "checked"))

STAFF = frozenset(("operator", "supervisor"))
SUPERVISOR = frozenset(("supervisor",))
UNIT = frozenset(("unit",))
COLLECTOR = frozenset(("collector",))


class InvalidTransition(Conflict):
    """Not allowed in the current state; the problem lists ``allowed_actions``."""

    code = "invalid_transition"
    title = "Not allowed in the current state"


class VersionConflict(Conflict):
    """The client's ``version`` is not the current one: someone else changed the case."""

    code = "version_conflict"
    title = "The case was changed meanwhile"


REJECT_REASONS = ("out_of_scope", "not_found_on_site", "duplicate", "outside_jurisdiction", "invalid")
RETURN_REASONS = ("not_our_responsibility", "wrong_location", "needs_another_unit", "other")


@dataclass(frozen=True)
class Action:
    """One action of the lifecycle table (lifecycle.md)."""

    name: str
    on: str  # "report" | "case"
    sources: frozenset[str]
    target: str | None  # None: the status stays
    roles: frozenset[str]
    chinese: str


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("file", "report", frozenset(("received", "verifying")), "filed", STAFF, "立案"),
        Action("reject", "report", frozenset(("received", "verifying")), "rejected", STAFF, "不予立案"),
        Action("merge", "report", frozenset(("received", "verifying")), "merged", STAFF, "合并重复上报"),
        Action("request_verification", "report", frozenset(("received",)), "verifying", STAFF, "核实"),
        Action("self_handle", "report", frozenset(("received",)), "closed", COLLECTOR, "自处理"),
        Action("dispatch", "case", frozenset(("filed", "returned")), "dispatched", STAFF, "派遣"),
        Action("sign", "case", frozenset(("dispatched",)), None, UNIT, "签收"),
        Action("subdispatch", "case", frozenset(("dispatched",)), None, UNIT, "二级派遣"),
        Action("return", "case", frozenset(("dispatched",)), "returned", UNIT, "回退"),
        Action("request_extension", "case", frozenset(("dispatched",)), None, UNIT, "延期申请"),
        Action("approve_extension", "case", frozenset(("dispatched",)), None, SUPERVISOR, "批准延期"),
        Action("deny_extension", "case", frozenset(("dispatched",)), None, SUPERVISOR, "驳回延期"),
        Action("suspend", "case", frozenset(("dispatched",)), "suspended", SUPERVISOR, "挂账/缓办"),
        Action("resume", "case", frozenset(("suspended",)), "dispatched", SUPERVISOR, "恢复"),
        Action("handle", "case", frozenset(("dispatched",)), "handled", UNIT, "处置反馈"),
        Action("close", "case", frozenset(("checked",)), "closed", SUPERVISOR, "结案"),
        Action(
            "cancel",
            "case",
            frozenset(("filed", "dispatched", "returned", "suspended")),
            "cancelled",
            SUPERVISOR,
            "作废",
        ),
        Action("escalate", "case", OPEN_CASE, None, SUPERVISOR, "督办"),
    )
}
REPORT_ACTIONS = tuple(a for a in ACTIONS if ACTIONS[a].on == "report")
CASE_ACTIONS = tuple(a for a in ACTIONS if ACTIONS[a].on == "case")


def may(action: str, roles: frozenset[str] | set[str]) -> bool:
    """Does any of ``roles`` allow ``action``? Supervisors may do all an operator may."""
    return bool(ACTIONS[action].roles.intersection(roles))


def available(on: str, status: str, extension_pending: bool = False, signed: bool = False) -> list[str]:
    """Every action valid from ``status``, whoever may perform it (the body of a 409)."""
    out = []
    for name, action in ACTIONS.items():
        if action.on != on or status not in action.sources:
            continue
        if name in ("approve_extension", "deny_extension") and not extension_pending:
            continue
        if name == "request_extension" and extension_pending:
            continue
        if name == "sign" and signed:
            continue
        out.append(name)
    return out
