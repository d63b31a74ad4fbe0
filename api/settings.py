"""Service settings, read from the environment (prefix ``CITYGRID_``, plus ``DATABASE_URL``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYGRID_", extra="ignore")

    # Another PostGIS instead of the embedded cluster; plain ``postgresql://`` is accepted.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    database_name: str = "citygrid"
    pg_port: int = 54329
    pg_data: Path | None = None  # default: .pgdata in the checkout (see api.cluster)

    host: str = "127.0.0.1"
    port: int = 8000
    demo: bool = True
    demo_password: str = "citygrid-demo"
    token_ttl_s: int = 43200
    photo_dir: Path = PROJECT_ROOT / "var" / "photos"

    def url_for(self, database: str | None = None) -> str:
        """SQLAlchemy URL (asyncpg driver) of ``database`` on the configured server."""
        if self.database_url:
            url = self.database_url
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    url = "postgresql+asyncpg://" + url[len(prefix) :]
            if database is None:
                return url
            return make_url(url).set(database=database).render_as_string(hide_password=False)
        return f"postgresql+asyncpg://citygrid@127.0.0.1:{self.pg_port}/{database or self.database_name}"

    @property
    def embedded(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
