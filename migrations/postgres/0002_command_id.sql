-- Each write's events carry the id of the command attempt that wrote them, so that a command
-- whose connection broke before its answer came can be looked up instead of guessed at
-- (store/postgres/in_doubt.rs). Rows written before this migration have none.
ALTER TABLE events ADD COLUMN command_id TEXT;
