-- The hashes of a user's unused recovery codes, base64 and comma-separated ('' for none). They
-- live on the user row, so using one up is part of the same conditional write as the lockout
-- count: two checks of one code cannot both succeed, on any number of instances.
ALTER TABLE users ADD COLUMN recovery_codes TEXT NOT NULL DEFAULT '';
