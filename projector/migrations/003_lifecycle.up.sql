-- Names that change hands: releases and their holds, runtime reservations,
-- renames under way, and outbox rows for the claims topic (a rename's next
-- step). Like everything in the projection, these rows follow from the
-- decisions (projector/internal/projection.Fold).

-- Decisions now include releases, renames, reservations and transfers.
ALTER TABLE requests DROP CONSTRAINT requests_outcome_check;
ALTER TABLE requests ADD CONSTRAINT requests_outcome_check CHECK (outcome IN
    ('registered', 'rejected', 'released', 'renaming', 'renamed', 'reserved', 'unreserved', 'transferred'));

-- Released names held for their former holder. Only that user may claim
-- the key before held_until; a claim by anyone whose record timestamp is
-- at or after held_until ends the hold.
CREATE TABLE holds (
    key        text        PRIMARY KEY,                -- partition key of the released name
    canonical  text        NOT NULL,                   -- canonical form of the released name
    user_id    uuid        NOT NULL,                   -- the former holder
    request_id uuid        NOT NULL,                   -- the release (or rename) that started the hold
    held_until timestamptz NOT NULL                    -- the releasing record's timestamp plus its hold period
);

-- Names reserved at runtime by an administrator (the policy's built-in
-- list is not here: it is part of the policy version).
CREATE TABLE reservations (
    key         text        PRIMARY KEY,               -- partition key of the reserved name; blocks its confusables too
    canonical   text        NOT NULL,                  -- canonical form as reserved
    request_id  uuid        NOT NULL,                  -- the reserve command
    reserved_at timestamptz NOT NULL                   -- the reserve record's timestamp
);

-- Renames under way: from is locked from step 1 until step 3 releases or
-- unlocks it. A row that stays is a stuck rename (the chaos checker looks).
CREATE TABLE rename_locks (
    key        text PRIMARY KEY,                       -- partition key of from
    canonical  text NOT NULL,                          -- from's canonical form
    user_id    uuid NOT NULL,                          -- the renaming user, from's holder
    request_id uuid NOT NULL,                          -- the rename's request_id
    to_name    text NOT NULL                           -- to's canonical form
);

-- The outbox publishes decisions to registrations and a rename's next step
-- to claims (to the partition of the row's key, murmur2 as every producer).
ALTER TABLE outbox ADD COLUMN topic text NOT NULL DEFAULT 'registrations'
    CHECK (topic IN ('registrations', 'claims'));      -- registrations: partition claim_partition; claims: murmur2(key)
