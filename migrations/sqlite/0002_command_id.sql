-- The same column as on Postgres, so that both databases share the events' SQL. (An embedded
-- database has no in-doubt commits: its commit answers in the same process.)
ALTER TABLE events ADD COLUMN command_id TEXT;
