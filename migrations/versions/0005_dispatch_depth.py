"""Dispatch in depth and addressing: versioned rule sets, two-level dispatch, the outbox to
units, and the demo's roads, door plates and landmarks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from migrations.script import run

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
-- Versioned rule sets: dispatch_rules.rule_set is the version; exactly one is active.
CREATE TABLE dispatch_rule_sets (
    version      integer PRIMARY KEY,
    note         text,
    created_by   integer REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    active       boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX dispatch_rule_sets_one_active ON dispatch_rule_sets (active) WHERE active;
INSERT INTO dispatch_rule_sets (version, note, active, activated_at) VALUES (1, '初始规则', true, now());
ALTER TABLE dispatch_rules ADD CONSTRAINT dispatch_rules_set
    FOREIGN KEY (rule_set) REFERENCES dispatch_rule_sets (version);
ALTER TABLE cases ADD COLUMN rule_set integer REFERENCES dispatch_rule_sets (version);

-- Two-level dispatch (二级派遣): a dispatch center unit hands a case on to a child unit.
ALTER TABLE cases ADD COLUMN parent_unit_id integer REFERENCES units (id);
ALTER TABLE cases ADD COLUMN parent_deadline_at timestamptz;

-- Delivery to units: written in the transaction of the event, sent by the service.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    unit_id         integer NOT NULL REFERENCES units (id),
    case_id         bigint REFERENCES cases (id),
    event_id        bigint REFERENCES case_events (id),
    kind            text NOT NULL,
    payload         jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'feed_only')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_unit ON outbox (unit_id, id);
ALTER TABLE cases ADD COLUMN yellow_notified_at timestamptz;

-- The place description an operator reads on the phone (reverse geocoding), kept with each.
ALTER TABLE reports ADD COLUMN place text;
ALTER TABLE cases ADD COLUMN place text;

-- Addressing: named road centre-lines, door plates (路名 + 号) and landmarks.
CREATE TABLE roads (
    id        serial PRIMARY KEY,
    name      text NOT NULL,
    kind      text NOT NULL,
    area_code text REFERENCES management_areas (code),
    generated boolean NOT NULL DEFAULT false,
    geom      geometry(MultiLineString, 4490) NOT NULL,
    UNIQUE (name, area_code)
);
CREATE INDEX roads_geom ON roads USING gist (geom);
CREATE INDEX roads_name_trgm ON roads USING gin (name gin_trgm_ops);

CREATE TABLE addresses (
    id        serial PRIMARY KEY,
    road_id   integer NOT NULL REFERENCES roads (id) ON DELETE CASCADE,
    number    integer NOT NULL CHECK (number > 0),
    label     text NOT NULL,
    generated boolean NOT NULL DEFAULT false,
    geom      geometry(Point, 4490) NOT NULL,
    UNIQUE (road_id, number)
);
CREATE INDEX addresses_geom ON addresses USING gist (geom);
CREATE INDEX addresses_label_trgm ON addresses USING gin (label gin_trgm_ops);

CREATE TABLE landmarks (
    id        serial PRIMARY KEY,
    name      text NOT NULL,
    kind      text NOT NULL,
    generated boolean NOT NULL DEFAULT false,
    geom      geometry(Point, 4490) NOT NULL
);
CREATE INDEX landmarks_geom ON landmarks USING gist (geom);
CREATE INDEX landmarks_name_trgm ON landmarks USING gin (name gin_trgm_ops);
"""

DOWNGRADE = """
ALTER TABLE cases DROP COLUMN place;
ALTER TABLE reports DROP COLUMN place;
DROP TABLE landmarks;
DROP TABLE addresses;
DROP TABLE roads;
ALTER TABLE cases DROP COLUMN yellow_notified_at;
DROP TABLE outbox;
ALTER TABLE cases DROP COLUMN parent_deadline_at;
ALTER TABLE cases DROP COLUMN parent_unit_id;
ALTER TABLE cases DROP COLUMN rule_set;
ALTER TABLE dispatch_rules DROP CONSTRAINT dispatch_rules_set;
DROP TABLE dispatch_rule_sets;
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
