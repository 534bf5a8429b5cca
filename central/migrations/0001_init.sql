-- gasgate central, schema 1. Applied by `gasgate central db upgrade` (central/db.py), once.
-- Times are timestamptz. Two clocks appear and are never mixed up: `*_received_at` / `opened_at`
-- / officer times are the center's own clock; `summary_at`, `raised_at` and the events' `times`
-- are the gateway's clock (never a device's). Response times are measured on the center's clock.

CREATE TABLE gateways (
    gateway_id      text PRIMARY KEY,
    online          boolean,          -- its retained availability; NULL: never said
    availability_at timestamptz,      -- when the center last received its availability
    last_seen       timestamptz NOT NULL,  -- last message of any kind from it (center clock)
    last_event_at   timestamptz,      -- last alarm event
    last_alarm_id   text,
    first_seen      timestamptz NOT NULL
);

CREATE TABLE sites (
    gateway_id   text NOT NULL REFERENCES gateways,
    site_id      text NOT NULL,
    name         text NOT NULL DEFAULT '',
    address      text NOT NULL DEFAULT '',
    district     text NOT NULL DEFAULT '',
    site_type    text NOT NULL DEFAULT 'other',
    lat          double precision,
    lon          double precision,
    protected    boolean,             -- the summary's verdict; NULL: the gateway did not say
    summary      jsonb NOT NULL,      -- the latest summary as received
    summary_at   timestamptz NOT NULL,  -- its own `at` (gateway clock): an older one never wins
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (gateway_id, site_id)
);
CREATE INDEX sites_district ON sites (district);

CREATE TABLE incidents (
    incident_id     bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('site', 'gateway_offline')),
    category        text NOT NULL CHECK (category IN ('emergency', 'maintenance')),
    gateway_id      text NOT NULL,
    site_id         text,             -- NULL: the gateway itself (offline, or an alarm of no site)
    district        text NOT NULL DEFAULT '',
    severity        text NOT NULL,
    state           text NOT NULL DEFAULT 'new'
                    CHECK (state IN ('new', 'acknowledged', 'dispatched', 'on_site', 'resolved', 'closed')),
    valve_state     text,             -- closed / open / mixed / ...; NULL: no linked valve
    title           jsonb NOT NULL,   -- {"zh": ..., "en": ...}
    opened_at       timestamptz NOT NULL,
    raised_at       timestamptz,      -- the earliest alarm's raise (gateway clock)
    acknowledged_at timestamptz, acknowledged_by text,
    dispatched_at   timestamptz, dispatched_by text, crew text, eta timestamptz,
    on_site_at      timestamptz, on_site_by text,
    resolved_at     timestamptz, resolved_by text, cause text, resolution_note text,
    closed_at       timestamptz,
    updated_at      timestamptz NOT NULL
);
-- At most one open "gateway offline" incident per gateway, whichever instance noticed first.
CREATE UNIQUE INDEX incidents_one_offline ON incidents (gateway_id)
    WHERE kind = 'gateway_offline' AND state <> 'closed';
CREATE INDEX incidents_open ON incidents (severity, opened_at) WHERE state <> 'closed';
CREATE INDEX incidents_site ON incidents (gateway_id, site_id, category) WHERE state <> 'closed';
CREATE INDEX incidents_district ON incidents (district, opened_at);

CREATE TABLE alarms (
    alarm_id     text PRIMARY KEY,
    gateway_id   text NOT NULL,
    site_id      text,
    incident_id  bigint NOT NULL REFERENCES incidents,
    revision     integer NOT NULL,    -- the highest event revision applied: a lower one never wins
    alarm_type   text NOT NULL,
    severity     text NOT NULL,
    state        text NOT NULL,       -- ISA-18.2 state at the gateway
    active       boolean NOT NULL,
    valve_state  text,
    event        jsonb NOT NULL,      -- the event of that revision
    raised_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX alarms_incident ON alarms (incident_id);

CREATE TABLE alarm_events (           -- every event once: (alarm_id, revision) is the gateway's key
    alarm_id     text NOT NULL,
    revision     integer NOT NULL,
    gateway_id   text NOT NULL,
    transition   text NOT NULL,
    received_at  timestamptz NOT NULL,
    received_by  text NOT NULL,       -- the instance that took it in
    event        jsonb NOT NULL,
    PRIMARY KEY (alarm_id, revision)
);

CREATE TABLE timeline (               -- an incident's one timeline, oldest first
    entry_id     bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents,
    at           timestamptz NOT NULL,  -- center clock
    kind         text NOT NULL,         -- alarm_event, transition, command, reply, note, gateway, site_answer
    actor        text,
    detail       jsonb NOT NULL
);
CREATE INDEX timeline_incident ON timeline (incident_id, entry_id);

CREATE TABLE commands (               -- officer commands to gateways: an outbox, never lost
    cmd_id       text PRIMARY KEY,
    incident_id  bigint REFERENCES incidents,
    gateway_id   text NOT NULL,
    alarm_id     text NOT NULL,
    officer      text NOT NULL,
    action       text NOT NULL CHECK (action IN ('acknowledge', 'resolve')),
    note         text,
    created_at   timestamptz NOT NULL,
    sent_at      timestamptz,         -- the broker took it (PUBACK); it waits there for the gateway
    replied_at   timestamptz,
    accepted     boolean,
    reason       text,
    reply        jsonb
);
CREATE INDEX commands_unsent ON commands (created_at) WHERE sent_at IS NULL;
CREATE INDEX commands_incident ON commands (incident_id);

CREATE TABLE users (
    name          text PRIMARY KEY,
    role          text NOT NULL,
    password_hash text,
    districts     text[],             -- NULL: every district
    created_at    timestamptz NOT NULL
);

CREATE TABLE tokens (
    token_sha256 text PRIMARY KEY,
    name         text NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at   timestamptz NOT NULL
);
