"""A revision counter and notification for the geography, so in-process indexes stay in sync.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from alembic import op

from migrations.script import run

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("unit_grids", "regions", "management_areas")

UPGRADE = """
CREATE TABLE geo_revision (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    n   bigint NOT NULL DEFAULT 0
);
INSERT INTO geo_revision DEFAULT VALUES;

CREATE FUNCTION geo_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE geo_revision SET n = n + 1;
    PERFORM pg_notify('citygrid_geo', TG_TABLE_NAME);
    RETURN NULL;
END $$;
""" + "".join(
    f"""
CREATE TRIGGER {t}_revision AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t}
    FOR EACH STATEMENT EXECUTE FUNCTION geo_revision_bump();
"""
    for t in TABLES
)


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    for t in TABLES:
        op.execute(f"DROP TRIGGER {t}_revision ON {t}")
    op.execute("DROP FUNCTION geo_revision_bump()")
    op.execute("DROP TABLE geo_revision")
