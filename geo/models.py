"""Tables of the city's geography: management areas, regions, unit grids, units, components.

The schema itself changes only through Alembic (migrations/); these mappings mirror it for
queries, and a test checks they agree.
"""

from __future__ import annotations

from datetime import datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    ARRAY,
    CHAR,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID = 4490  # CGCS2000 geographic, the legal datum of Chinese city GIS


def geometry(kind: str) -> Geometry:
    # Indexes are created by the migrations, not by the mapping.
    return Geometry(kind, srid=SRID, spatial_index=False)


class Base(DeclarativeBase):
    metadata = MetaData()


class ManagementArea(Base):
    """管理区域: 鹤城区, 经开区, 高新区, 中方县 — cases and statistics group by these."""

    __tablename__ = "management_areas"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    full_name: Mapped[str] = mapped_column(Text)
    county_code: Mapped[str] = mapped_column(Text)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    geom = mapped_column(geometry("MULTIPOLYGON"), nullable=False)


class Region(Base):
    """Administrative region: county (区县), street (街道/乡镇) or community (社区/村)."""

    __tablename__ = "regions"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    level: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"))
    area_code: Mapped[str | None] = mapped_column(ForeignKey("management_areas.code"))
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(geometry("MULTIPOLYGON"), nullable=False)


class UnitGrid(Base):
    """单元网格: about 10,000 m², the smallest management area (GB/T 30428.1)."""

    __tablename__ = "unit_grids"
    code: Mapped[str] = mapped_column(CHAR(15), primary_key=True)
    community_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    area_code: Mapped[str] = mapped_column(ForeignKey("management_areas.code"))
    area_m2: Mapped[float] = mapped_column(Float)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("POLYGON"), nullable=False)


class Unit(Base):
    """责任单位/专业部门: a responsible unit, possibly under a parent unit."""

    __tablename__ = "units"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    area_code: Mapped[str | None] = mapped_column(ForeignKey("management_areas.code"))
    region_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"))
    dispatch_center: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    working_hours: Mapped[dict | None] = mapped_column(JSONB)
    phone: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ComponentClass(Base):
    """部件 class of GB/T 47678.5-2026, e.g. 01001 供水井盖."""

    __tablename__ = "component_classes"
    code: Mapped[str] = mapped_column(CHAR(5), primary_key=True)
    major_code: Mapped[str] = mapped_column(CHAR(2))
    major_name: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)


class Component(Base):
    """部件 instance with its 17-digit code and owner unit."""

    __tablename__ = "components"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(CHAR(17), unique=True)
    class_code: Mapped[str] = mapped_column(ForeignKey("component_classes.code"))
    owner_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    status: Mapped[str] = mapped_column(Text, default="in_use")
    attributes: Mapped[dict] = mapped_column(JSONB, default=dict)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("POINT"), nullable=False)


class ResponsibilityArea(Base):
    """责任区域: a polygon whose matters belong to an owner unit (物业管理区域, park, …)."""

    __tablename__ = "responsibility_areas"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    owner_unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    matter_classes: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("MULTIPOLYGON"), nullable=False)


class GeoRevision(Base):
    """One row: the revision of the geography, bumped by a trigger on every change (NOTIFY too)."""

    __tablename__ = "geo_revision"
    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, default=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class Road(Base):
    """A named road centre-line (路)."""

    __tablename__ = "roads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    area_code: Mapped[str | None] = mapped_column(ForeignKey("management_areas.code"))
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    geom = mapped_column(geometry("MULTILINESTRING"), nullable=False)


class Address(Base):
    """A door plate: road name + number (门牌号)."""

    __tablename__ = "addresses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    road_id: Mapped[int] = mapped_column(ForeignKey("roads.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    geom = mapped_column(geometry("POINT"), nullable=False)


class Landmark(Base):
    """A place people name: school, market, hospital, park, bus stop, residential compound (小区)."""

    __tablename__ = "landmarks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    geom = mapped_column(geometry("POINT"), nullable=False)
