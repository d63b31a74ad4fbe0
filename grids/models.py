"""Tables of the grid system's patrol: collector beats (责任网格) and GPS track points."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CHAR, DateTime, Float, ForeignKey, func
from sqlalchemy.orm import Mapped, mapped_column

from geo.models import Base, geometry


class Beat(Base):
    """One grid's responsible collector; the primary key makes every grid held exactly once."""

    __tablename__ = "beats"
    grid_code: Mapped[str] = mapped_column(
        CHAR(15),
        ForeignKey("unit_grids.code", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    )
    collector_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TrackPoint(Base):
    """A collector's GPS position at time ``t`` (one per collector and instant)."""

    __tablename__ = "track_points"
    collector_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    t: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(CHAR(15))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom = mapped_column(geometry("POINT"), nullable=False)
