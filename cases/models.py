"""Tables of the command center's work: people, catalogue, reports, cases, events, tasks, rules."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    CHAR,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from geo.models import Base, geometry

ROLES = ("collector", "operator", "supervisor", "unit", "planner", "admin")


class User(Base):
    """A person signing in, holding a set of roles; unit users are bound to their unit."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(Text, unique=True)
    display_name: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    phone: Mapped[str | None] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuthToken(Base):
    __tablename__ = "auth_tokens"
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadlineClass(Base):
    """处置时限 class: an amount of natural hours, working hours or working days."""

    __tablename__ = "deadline_classes"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    amount: Mapped[Decimal] = mapped_column(Numeric)


class MatterClass(Base):
    """事项 class (部件异常 or 事件) of GB/T 47678.5-2026 with its deadline class."""

    __tablename__ = "matter_classes"
    code: Mapped[str] = mapped_column(CHAR(5), primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    major_code: Mapped[str] = mapped_column(CHAR(2))
    major_name: Mapped[str] = mapped_column(Text)
    minor_code: Mapped[str] = mapped_column(CHAR(3))
    name: Mapped[str] = mapped_column(Text)
    component_class: Mapped[str | None] = mapped_column(ForeignKey("component_classes.code"))
    deadline_class: Mapped[str] = mapped_column(ForeignKey("deadline_classes.code"))
    duplicate_radius_m: Mapped[float] = mapped_column(Float, default=30)
    filing_condition: Mapped[str | None] = mapped_column(Text)
    closing_condition: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Report(Base):
    """上报: one problem as reported by a collector, the hotline, the public or an inspection."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(Text)
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    content_hash: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(ForeignKey("matter_classes.code"))
    description: Mapped[str] = mapped_column(Text, default="")
    input_crs: Mapped[str] = mapped_column(Text, default="wgs84")
    input_lon: Mapped[float | None] = mapped_column(Float)
    input_lat: Mapped[float | None] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(Text)
    grid_code: Mapped[str | None] = mapped_column(CHAR(15))
    community_code: Mapped[str | None] = mapped_column(Text)
    street_code: Mapped[str | None] = mapped_column(Text)
    county_code: Mapped[str | None] = mapped_column(Text)
    area_code: Mapped[str | None] = mapped_column(ForeignKey("management_areas.code"))
    snapped_m: Mapped[float | None] = mapped_column(Float)
    component_code: Mapped[str | None] = mapped_column(CHAR(17))
    caller_name: Mapped[str | None] = mapped_column(Text)
    caller_phone: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default="received")
    reject_reason: Mapped[str | None] = mapped_column(Text)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    flags: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    place: Mapped[str | None] = mapped_column(Text)
    observed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("POINT"), nullable=False)


class Photo(Base):
    """A stored photo (content-addressed by sha256) of a report, a task result or a handling."""

    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(CHAR(64))
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("collector_tasks.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    purpose: Mapped[str] = mapped_column(Text, default="report")
    content_type: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    exif: Mapped[dict] = mapped_column(JSONB, default=dict)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("POINT"))


class Case(Base):
    """案卷: a filed problem; the row is the projection of its events."""

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(Text)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"))
    kind: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(ForeignKey("matter_classes.code"))
    description: Mapped[str] = mapped_column(Text, default="")
    grid_code: Mapped[str | None] = mapped_column(CHAR(15))
    community_code: Mapped[str | None] = mapped_column(Text)
    street_code: Mapped[str | None] = mapped_column(Text)
    county_code: Mapped[str | None] = mapped_column(Text)
    area_code: Mapped[str | None] = mapped_column(ForeignKey("management_areas.code"))
    component_code: Mapped[str | None] = mapped_column(CHAR(17))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    deadline_class: Mapped[str | None] = mapped_column(ForeignKey("deadline_classes.code"))
    priority: Mapped[int] = mapped_column(SmallInteger, default=3)
    stage_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    frozen_left_s: Mapped[float | None] = mapped_column(Float)
    rework_count: Mapped[int] = mapped_column(Integer, default=0)
    return_count: Mapped[int] = mapped_column(Integer, default=0)
    extension: Mapped[dict | None] = mapped_column(JSONB)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    flags: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    version: Mapped[int] = mapped_column(Integer, default=1)
    deadline_provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    stage: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handle_deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    yellow_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stage_total_s: Mapped[float | None] = mapped_column(Float)
    rule_set: Mapped[int | None] = mapped_column(ForeignKey("dispatch_rule_sets.version"))
    parent_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    parent_deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    yellow_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    place: Mapped[str | None] = mapped_column(Text)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("dispatch_rules.id", ondelete="SET NULL"))
    filed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("POINT"), nullable=False)


class CaseEvent(Base):
    """One action on a report or case; append-only (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "case_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    role: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSONB, default=dict)


class CollectorTask(Base):
    """核实 (verify) or 核查 (check) task for the collector whose beat holds the grid."""

    __tablename__ = "collector_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    collector_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(Text, default="open")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    result_client_id: Mapped[str | None] = mapped_column(Text)
    result_hash: Mapped[str | None] = mapped_column(Text)
    result_geom = mapped_column(geometry("POINT"))


class DispatchRule(Base):
    """派遣规则: an ordered rule; the first enabled match routes the case."""

    __tablename__ = "dispatch_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_set: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    match: Mapped[dict] = mapped_column(JSONB, default=dict)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    target: Mapped[str | None] = mapped_column(Text)
    deadline_class: Mapped[str | None] = mapped_column(ForeignKey("deadline_classes.code"))
    priority: Mapped[int] = mapped_column(SmallInteger, default=3)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class SeedRun(Base):
    """Which reference data set was loaded, and from what (its fingerprint)."""

    __tablename__ = "seed_runs"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CalendarDay(Base):
    """A holiday or make-up working day (调休) entered by an administrator."""

    __tablename__ = "calendar_days"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    entered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Setting(Base):
    """A setting of the command center, e.g. who may file, whether a passed check closes."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[dict] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DispatchRuleSet(Base):
    """A version of the dispatch rules; exactly one is active."""

    __tablename__ = "dispatch_rule_sets"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=False)


class OutboxMessage(Base):
    """A notice to a unit (dispatch, rework, escalation, yellow light), delivered by the service."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("case_events.id"))
    kind: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSONB)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(Text, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
