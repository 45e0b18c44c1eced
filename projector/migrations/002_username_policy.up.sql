-- The username policy version the registry decides under (package
-- claims/username; docs/usernames.md). A registry never mixes versions: the
-- projector and the API read this row, and a projector told to decide under
-- another version refuses to start, as a changed partition count does.
--
-- A database that already held data when this migration ran was made under
-- version 1 (the only version before it), so it keeps deciding under version
-- 1 until it is upgraded. A new database gets no row here: its first
-- projector or API records the latest version of its build.
CREATE TABLE username_policy (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton), -- makes this a one-row table
    version     integer     NOT NULL CHECK (version > 0),              -- the policy version in force
    recorded_at timestamptz NOT NULL DEFAULT now()                     -- when the version was recorded, for operators only
);

INSERT INTO username_policy (version)
SELECT 1
WHERE EXISTS (SELECT 1 FROM topic_layout)
   OR EXISTS (SELECT 1 FROM claim_partitions)
   OR EXISTS (SELECT 1 FROM requests);
