"""Case workflow: calendar days entered by administrators, stage limits, settings, case fields.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from migrations.script import run

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
-- Holidays and make-up working days (调休) an administrator enters, for years the
-- chinese-calendar package does not know yet (and to correct it).
CREATE TABLE calendar_days (
    day        date PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('holiday', 'workday')),
    name       text,
    entered_by integer REFERENCES users (id),
    entered_at timestamptz NOT NULL DEFAULT now()
);

-- Settings of the command center (filing restricted to supervisors, auto-close, …).
CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO settings (key, value) VALUES
    ('filing_roles', '["operator", "supervisor"]'),
    ('auto_close_on_fixed', 'false'),
    ('case_number_prefix', '"HH"');

-- Stage limits are deadline classes too (deadlines.md: stage defaults).
INSERT INTO deadline_classes (code, name, unit, amount) VALUES
    ('stage_verify', '核实：1自然小时', 'natural_hour', 1),
    ('stage_file', '立案：30工作分钟', 'working_hour', 0.5),
    ('stage_dispatch', '派遣：30工作分钟', 'working_hour', 0.5),
    ('stage_sign', '签收：1工作小时', 'working_hour', 1),
    ('stage_check', '核查：1自然小时', 'natural_hour', 1),
    ('stage_close', '结案：1工作小时', 'working_hour', 1)
ON CONFLICT (code) DO NOTHING;

ALTER TABLE cases ADD COLUMN deadline_provisional boolean NOT NULL DEFAULT false;
ALTER TABLE cases ADD COLUMN stage text;
ALTER TABLE cases ADD COLUMN signed_at timestamptz;
ALTER TABLE cases ADD COLUMN handle_deadline_at timestamptz;
-- When 80 % of the stage's counting time is used (the yellow light), so lights are a query.
ALTER TABLE cases ADD COLUMN yellow_at timestamptz;
-- The stage's whole counting time (s), kept so a resumed stage still lights yellow at 80 %.
ALTER TABLE cases ADD COLUMN stage_total_s double precision;
ALTER TABLE cases ADD COLUMN rule_id integer REFERENCES dispatch_rules (id) ON DELETE SET NULL;
ALTER TABLE reports ADD COLUMN verified boolean NOT NULL DEFAULT false;
CREATE INDEX cases_status ON cases (status) WHERE status NOT IN ('closed', 'cancelled');
CREATE INDEX cases_escalated ON cases (id) WHERE escalated;
CREATE INDEX cases_category_geom ON cases USING gist (geom) WHERE status NOT IN ('closed', 'cancelled', 'checked');
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run("""
DROP INDEX cases_category_geom;
DROP INDEX cases_escalated;
DROP INDEX cases_status;
ALTER TABLE reports DROP COLUMN verified;
ALTER TABLE cases DROP COLUMN rule_id;
ALTER TABLE cases DROP COLUMN stage_total_s;
ALTER TABLE cases DROP COLUMN yellow_at;
ALTER TABLE cases DROP COLUMN handle_deadline_at;
ALTER TABLE cases DROP COLUMN signed_at;
ALTER TABLE cases DROP COLUMN stage;
ALTER TABLE cases DROP COLUMN deadline_provisional;
DELETE FROM deadline_classes WHERE code LIKE 'stage_%';
DROP TABLE settings;
DROP TABLE calendar_days;
""")
