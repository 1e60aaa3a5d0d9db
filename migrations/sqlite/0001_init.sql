-- Users (the projection), their TOTP credentials, and the append-only event log.
-- Times are microseconds since the Unix epoch (the precision the API reports).

CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    resource_owner  TEXT NOT NULL,
    username        TEXT NOT NULL,
    email           TEXT NOT NULL,
    email_verified  INTEGER NOT NULL,
    profile         TEXT NOT NULL,
    state           TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    change_date     INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    -- Bumped by every write; a write applies only if it is unchanged since the read it decided on.
    version         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE totp (
    user_id        TEXT PRIMARY KEY REFERENCES users (user_id),
    state          TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    secret_sealed  BLOB NOT NULL,
    digits         INTEGER NOT NULL,
    period         INTEGER NOT NULL,
    last_used_step INTEGER,
    created_at     INTEGER NOT NULL
);

CREATE TABLE events (
    user_id        TEXT NOT NULL,
    sequence       INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    payload        TEXT NOT NULL,
    resource_owner TEXT NOT NULL,
    creator        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (user_id, sequence)
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
