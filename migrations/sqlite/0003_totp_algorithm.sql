-- An imported TOTP keeps the algorithm of the system it came from (digits and period were stored
-- from the start). Every credential before this migration was issued here, with SHA-1.
ALTER TABLE totp ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'SHA1';
