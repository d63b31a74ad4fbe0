"""Notifications for the service's in-memory copies: tokens' principals and the matter catalogue.

``citygrid_auth`` carries the id of a user whose tokens or account changed ('*': all users, after
a unit's code changed or a table was truncated); ``citygrid_catalogue`` says matter_classes
changed. PostgreSQL delivers them at commit, to every listening process.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from alembic import op

from migrations.script import run

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('citygrid_auth', '*');
    ELSIF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('citygrid_auth', OLD.id::text);
    ELSE
        PERFORM pg_notify('citygrid_auth', OLD.user_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER auth_tokens_changed AFTER UPDATE OR DELETE ON auth_tokens
    FOR EACH ROW EXECUTE FUNCTION auth_changed();
CREATE TRIGGER auth_tokens_truncated AFTER TRUNCATE ON auth_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();
CREATE TRIGGER users_changed AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION auth_changed();
CREATE TRIGGER users_truncated AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();
CREATE TRIGGER units_code_changed AFTER UPDATE OF code OR DELETE OR TRUNCATE ON units
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();

CREATE FUNCTION catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citygrid_catalogue', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER matter_classes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON matter_classes
    FOR EACH STATEMENT EXECUTE FUNCTION catalogue_changed();
"""

TRIGGERS = (
    ("auth_tokens_changed", "auth_tokens"),
    ("auth_tokens_truncated", "auth_tokens"),
    ("users_changed", "users"),
    ("users_truncated", "users"),
    ("units_code_changed", "units"),
    ("matter_classes_changed", "matter_classes"),
)


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    for trigger, table in TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    op.execute("DROP FUNCTION catalogue_changed()")
    op.execute("DROP FUNCTION auth_changed()")
