-- Users (the projection), their TOTP credentials, and the append-only event log.
-- Times are microseconds since the Unix epoch (the precision the API reports).

CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    resource_owner  TEXT NOT NULL,
    username        TEXT NOT NULL,
    email           TEXT NOT NULL,
    email_verified  BIGINT NOT NULL,
    profile         TEXT NOT NULL,
    state           TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    change_date     BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    -- Bumped by every write; a write applies only if it is unchanged since the read it decided on.
    version         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE totp (
    user_id        TEXT PRIMARY KEY REFERENCES users (user_id),
    state          TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    secret_sealed  BYTEA NOT NULL,
    digits         BIGINT NOT NULL,
    period         BIGINT NOT NULL,
    last_used_step BIGINT,
    created_at     BIGINT NOT NULL
);

CREATE TABLE events (
    user_id        TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    event_type     TEXT NOT NULL,
    payload        TEXT NOT NULL,
    resource_owner TEXT NOT NULL,
    creator        TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (user_id, sequence)
);

CREATE FUNCTION events_are_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
