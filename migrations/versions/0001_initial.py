"""Initial schema: geography, grids, units, people, catalogue, reports, cases, tasks, tracks, rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

from migrations.script import run

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROLES = "'collector','operator','supervisor','unit','planner','admin'"

UPGRADE = f"""
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Geography (geo/) ------------------------------------------------------------------------
CREATE TABLE management_areas (
    code        text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    full_name   text NOT NULL,
    county_code text NOT NULL,
    generated   boolean NOT NULL DEFAULT false,
    geom        geometry(MultiPolygon, 4490) NOT NULL
);
CREATE INDEX management_areas_geom ON management_areas USING gist (geom);

CREATE TABLE regions (
    code        text PRIMARY KEY CHECK (code ~ '^[0-9]{{6}}([0-9]{{3}}){{0,2}}$'),
    level       text NOT NULL CHECK (level IN ('county', 'street', 'community')),
    name        text NOT NULL,
    parent_code text REFERENCES regions (code),
    area_code   text REFERENCES management_areas (code),
    generated   boolean NOT NULL DEFAULT false,
    source      text,
    geom        geometry(MultiPolygon, 4490) NOT NULL,
    CHECK ((level = 'county') = (parent_code IS NULL)),
    CHECK (length(code) = CASE level WHEN 'county' THEN 6 WHEN 'street' THEN 9 ELSE 12 END)
);
CREATE INDEX regions_geom ON regions USING gist (geom);
CREATE INDEX regions_parent ON regions (parent_code);

CREATE TABLE unit_grids (
    code           char(15) PRIMARY KEY CHECK (code ~ '^[0-9]{{15}}$'),
    community_code text NOT NULL REFERENCES regions (code),
    area_code      text NOT NULL REFERENCES management_areas (code),
    area_m2        double precision NOT NULL,
    generated      boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    geom           geometry(Polygon, 4490) NOT NULL,
    CHECK (left(code, 12) = community_code)
);
CREATE INDEX unit_grids_geom ON unit_grids USING gist (geom);
CREATE INDEX unit_grids_community ON unit_grids (community_code);

-- Responsible units (专业部门) --------------------------------------------------------------
CREATE TABLE units (
    id              serial PRIMARY KEY,
    code            text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9-]*$'),
    name            text NOT NULL,
    kind            text NOT NULL,
    parent_id       integer REFERENCES units (id),
    area_code       text REFERENCES management_areas (code),
    region_code     text REFERENCES regions (code),
    dispatch_center boolean NOT NULL DEFAULT false,
    webhook_url     text,
    webhook_secret  text,
    working_hours   jsonb,
    phone           text,
    active          boolean NOT NULL DEFAULT true,
    generated       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX units_parent ON units (parent_id);

-- People and sign-in ----------------------------------------------------------------------
CREATE TABLE users (
    id            serial PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    password_hash text,
    roles         text[] NOT NULL CHECK (roles <@ ARRAY[{ROLES}] AND cardinality(roles) > 0),
    unit_id       integer REFERENCES units (id),
    phone         text,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT ('unit' = ANY (roles)) OR unit_id IS NOT NULL)
);

CREATE TABLE auth_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

CREATE TABLE login_failures (
    id       bigserial PRIMARY KEY,
    username text NOT NULL,
    address  text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key ON login_failures (username, address, at);

-- Collector beats (责任网格): each grid has exactly one collector ---------------------------
CREATE TABLE beats (
    grid_code    char(15) PRIMARY KEY REFERENCES unit_grids (code) ON DELETE CASCADE ON UPDATE CASCADE,
    collector_id integer NOT NULL REFERENCES users (id),
    assigned_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX beats_collector ON beats (collector_id);

-- Catalogue (GB/T 47678.5-2026) and deadline classes ---------------------------------------
CREATE TABLE deadline_classes (
    code   text PRIMARY KEY,
    name   text NOT NULL,
    unit   text NOT NULL CHECK (unit IN ('natural_hour', 'working_hour', 'working_day')),
    amount numeric NOT NULL CHECK (amount > 0)
);

CREATE TABLE component_classes (
    code       char(5) PRIMARY KEY CHECK (code ~ '^[0-9]{{5}}$'),
    major_code char(2) NOT NULL,
    major_name text NOT NULL,
    name       text NOT NULL
);

CREATE TABLE matter_classes (
    code              char(5) PRIMARY KEY CHECK (code ~ '^[0-9]{{5}}$'),
    kind              text NOT NULL CHECK (kind IN ('component', 'event')),
    major_code        char(2) NOT NULL,
    major_name        text NOT NULL,
    minor_code        char(3) NOT NULL,
    name              text NOT NULL,
    component_class   char(5) REFERENCES component_classes (code),
    deadline_class    text NOT NULL REFERENCES deadline_classes (code),
    duplicate_radius_m real NOT NULL DEFAULT 30,
    filing_condition  text,
    closing_condition text,
    active            boolean NOT NULL DEFAULT true
);

-- Components (部件) ------------------------------------------------------------------------
CREATE TABLE components (
    id            bigserial PRIMARY KEY,
    code          char(17) NOT NULL UNIQUE CHECK (code ~ '^[0-9]{{17}}$'),
    class_code    char(5) NOT NULL REFERENCES component_classes (code),
    owner_unit_id integer REFERENCES units (id),
    status        text NOT NULL DEFAULT 'in_use',
    attributes    jsonb NOT NULL DEFAULT '{{}}',
    generated     boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    geom          geometry(Point, 4490) NOT NULL
);
CREATE INDEX components_geom ON components USING gist (geom);
CREATE INDEX components_class ON components (class_code);
CREATE INDEX components_owner ON components (owner_unit_id);

-- Responsibility areas (责任区域) -----------------------------------------------------------
CREATE TABLE responsibility_areas (
    id             serial PRIMARY KEY,
    name           text NOT NULL,
    kind           text NOT NULL,
    owner_unit_id  integer NOT NULL REFERENCES units (id),
    matter_classes text[],
    generated      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    geom           geometry(MultiPolygon, 4490) NOT NULL
);
CREATE INDEX responsibility_areas_geom ON responsibility_areas USING gist (geom);

-- Reports (上报) ---------------------------------------------------------------------------
CREATE TABLE reports (
    id             bigserial PRIMARY KEY,
    source         text NOT NULL CHECK (source IN ('collector', 'hotline', 'public', 'inspection')),
    client_id      text,
    collector_id   integer REFERENCES users (id),
    created_by     integer REFERENCES users (id),
    content_hash   text,
    kind           text NOT NULL CHECK (kind IN ('component', 'event')),
    category       char(5) NOT NULL REFERENCES matter_classes (code),
    description    text NOT NULL DEFAULT '',
    input_crs      text NOT NULL DEFAULT 'wgs84',
    input_lon      double precision,
    input_lat      double precision,
    accuracy_m     real,
    address        text,
    grid_code      char(15),
    community_code text,
    street_code    text,
    county_code    text,
    area_code      text REFERENCES management_areas (code),
    snapped_m      real,
    component_code char(17),
    caller_name    text,
    caller_phone   text,
    status         text NOT NULL DEFAULT 'received'
                   CHECK (status IN ('received', 'verifying', 'filed', 'rejected', 'merged')),
    reject_reason  text,
    case_id        bigint,
    flags          text[] NOT NULL DEFAULT '{{}}',
    observed_at    timestamptz,
    received_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    geom           geometry(Point, 4490) NOT NULL,
    UNIQUE (collector_id, client_id)
);
CREATE INDEX reports_geom ON reports USING gist (geom);
CREATE INDEX reports_intake ON reports (received_at) WHERE status IN ('received', 'verifying');
CREATE INDEX reports_collector_sync ON reports (collector_id, updated_at);
CREATE INDEX reports_received ON reports (received_at);

CREATE TABLE photos (
    id           bigserial PRIMARY KEY,
    sha256       char(64) NOT NULL,
    report_id    bigint REFERENCES reports (id),
    task_id      bigint,
    case_id      bigint,
    purpose      text NOT NULL DEFAULT 'report',
    content_type text NOT NULL,
    size_bytes   integer NOT NULL,
    width        integer,
    height       integer,
    exif         jsonb NOT NULL DEFAULT '{{}}',
    taken_at     timestamptz,
    geom         geometry(Point, 4490),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photos_sha256 ON photos (sha256);
CREATE INDEX photos_report ON photos (report_id);

-- Cases (案卷) and their append-only event log ----------------------------------------------
CREATE SEQUENCE case_number_seq;
CREATE TABLE cases (
    id              bigserial PRIMARY KEY,
    number          text NOT NULL UNIQUE,
    status          text NOT NULL CHECK (status IN
                    ('filed', 'dispatched', 'returned', 'suspended', 'handled', 'checked', 'closed', 'cancelled')),
    report_id       bigint NOT NULL REFERENCES reports (id),
    kind            text NOT NULL,
    category        char(5) NOT NULL REFERENCES matter_classes (code),
    description     text NOT NULL DEFAULT '',
    grid_code       char(15),
    community_code  text,
    street_code     text,
    county_code     text,
    area_code       text REFERENCES management_areas (code),
    component_code  char(17),
    unit_id         integer REFERENCES units (id),
    deadline_class  text REFERENCES deadline_classes (code),
    priority        smallint NOT NULL DEFAULT 3,
    stage_started_at timestamptz,
    deadline_at     timestamptz,
    frozen_left_s   double precision,
    rework_count    integer NOT NULL DEFAULT 0,
    return_count    integer NOT NULL DEFAULT 0,
    extension       jsonb,
    escalated       boolean NOT NULL DEFAULT false,
    flags           text[] NOT NULL DEFAULT '{{}}',
    version         integer NOT NULL DEFAULT 1,
    filed_at        timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz,
    handled_at      timestamptz,
    closed_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    geom            geometry(Point, 4490) NOT NULL
);
CREATE INDEX cases_open_deadline ON cases (deadline_at) WHERE status NOT IN ('closed', 'cancelled');
CREATE INDEX cases_open_geom ON cases USING gist (geom) WHERE status NOT IN ('closed', 'cancelled');
CREATE INDEX cases_unit_status ON cases (unit_id, status);
CREATE INDEX cases_filed ON cases (filed_at);
ALTER TABLE reports ADD CONSTRAINT reports_case FOREIGN KEY (case_id) REFERENCES cases (id);
ALTER TABLE photos ADD CONSTRAINT photos_case FOREIGN KEY (case_id) REFERENCES cases (id);

CREATE TABLE case_events (
    id          bigserial PRIMARY KEY,
    case_id     bigint REFERENCES cases (id),
    report_id   bigint REFERENCES reports (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    integer REFERENCES users (id),
    role        text,
    action      text NOT NULL,
    from_status text,
    to_status   text,
    payload     jsonb NOT NULL DEFAULT '{{}}',
    CHECK (case_id IS NOT NULL OR report_id IS NOT NULL)
);
CREATE INDEX case_events_case ON case_events (case_id, id);
CREATE INDEX case_events_report ON case_events (report_id, id);
CREATE INDEX case_events_at ON case_events (at);

CREATE FUNCTION case_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER case_events_no_update BEFORE UPDATE OR DELETE ON case_events
    FOR EACH ROW EXECUTE FUNCTION case_events_append_only();
CREATE TRIGGER case_events_no_truncate BEFORE TRUNCATE ON case_events
    FOR EACH STATEMENT EXECUTE FUNCTION case_events_append_only();

-- Collector tasks (核实 verify, 核查 check) ------------------------------------------------
CREATE TABLE collector_tasks (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('verify', 'check')),
    report_id        bigint REFERENCES reports (id),
    case_id          bigint REFERENCES cases (id),
    collector_id     integer NOT NULL REFERENCES users (id),
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    due_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz,
    outcome          text CHECK (outcome IN ('confirmed', 'not_found', 'fixed', 'not_fixed')),
    note             text,
    result_client_id text,
    result_hash      text,
    result_geom      geometry(Point, 4490),
    CHECK (report_id IS NOT NULL OR case_id IS NOT NULL),
    UNIQUE (collector_id, result_client_id)
);
CREATE INDEX collector_tasks_open ON collector_tasks (collector_id, due_at) WHERE status = 'open';
ALTER TABLE photos ADD CONSTRAINT photos_task FOREIGN KEY (task_id) REFERENCES collector_tasks (id);

-- GPS track points of collectors -----------------------------------------------------------
CREATE TABLE track_points (
    collector_id integer NOT NULL REFERENCES users (id),
    t            timestamptz NOT NULL,
    accuracy_m   real,
    grid_code    char(15),
    received_at  timestamptz NOT NULL DEFAULT now(),
    geom         geometry(Point, 4490) NOT NULL,
    PRIMARY KEY (collector_id, t)
);
CREATE INDEX track_points_geom ON track_points USING gist (geom);
CREATE INDEX track_points_grid_t ON track_points (grid_code, t);

-- Dispatch rules (派遣规则), ordered, first match wins ----------------------------------------
CREATE TABLE dispatch_rules (
    id             serial PRIMARY KEY,
    rule_set       integer NOT NULL DEFAULT 1,
    position       integer NOT NULL,
    name           text NOT NULL,
    match          jsonb NOT NULL DEFAULT '{{}}',
    unit_id        integer REFERENCES units (id),
    target         text,
    deadline_class text REFERENCES deadline_classes (code),
    priority       smallint NOT NULL DEFAULT 3,
    enabled        boolean NOT NULL DEFAULT true,
    UNIQUE (rule_set, position),
    CHECK (unit_id IS NOT NULL OR target IS NOT NULL)
);

-- Bookkeeping of loaded reference data (idempotent seeding) --------------------------------
CREATE TABLE seed_runs (
    name        text PRIMARY KEY,
    fingerprint text NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);
"""

TABLES = [
    "seed_runs",
    "dispatch_rules",
    "track_points",
    "photos",
    "collector_tasks",
    "case_events",
    "reports",
    "cases",
    "responsibility_areas",
    "components",
    "matter_classes",
    "component_classes",
    "deadline_classes",
    "beats",
    "login_failures",
    "auth_tokens",
    "users",
    "units",
    "unit_grids",
    "regions",
    "management_areas",
]


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    op.execute("ALTER TABLE reports DROP CONSTRAINT reports_case")
    for table in TABLES:
        op.execute(f"DROP TABLE {table} CASCADE")
    op.execute("DROP SEQUENCE case_number_seq")
    op.execute("DROP FUNCTION case_events_append_only()")
