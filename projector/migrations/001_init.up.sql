-- The projection of the claims topic. Everything here can be rebuilt from
-- the topics; the projector is its only writer.

-- One row per claims partition: how far the projector has decided and
-- which owner may write. See projector/doc.go for the fencing protocol.
CREATE TABLE claim_partitions (
    partition   integer     PRIMARY KEY,               -- partition number of the claims topic
    next_offset bigint      NOT NULL DEFAULT 0,        -- first claims offset not yet decided; consumption resumes here
    owner_epoch bigint      NOT NULL DEFAULT 0,        -- bumped on every assignment; a write with an older epoch is a zombie's and is refused
    updated_at  timestamptz NOT NULL DEFAULT now()     -- when the row last changed, for operators only
);

-- The record of the topics' shape, so that a changed partition count (which
-- would move names between partitions) stops the registry instead of
-- corrupting it.
CREATE TABLE topic_layout (
    topic      text    PRIMARY KEY,                    -- topic name
    partitions integer NOT NULL CHECK (partitions > 0) -- partition count when the registry first ran
);

-- Who holds which name. The UNIQUE constraints are the backstop behind the
-- single-writer rule: no canonical name and no skeleton has two holders.
CREATE TABLE usernames (
    canonical       text        PRIMARY KEY,           -- canonical form (PRECIS UsernameCaseMapped)
    key             text        NOT NULL UNIQUE,       -- confusable skeleton of canonical, the partition key
    username        text        NOT NULL,              -- as typed in the winning claim
    user_id         uuid        NOT NULL,              -- the holder
    request_id      uuid        NOT NULL,              -- the winning claim's request (not unique: a request_id reused in two partitions may win a name in each)
    claim_partition integer     NOT NULL,              -- where the winning claim is in the claims topic
    claim_offset    bigint      NOT NULL,
    registered_at   timestamptz NOT NULL               -- the winning claim record's timestamp (from the log, so replay reproduces it)
);

-- The request ledger: the first decision for every request_id in each
-- partition. A claim that repeats a request_id with the same payload gets
-- this decision again; with another payload it gets request_conflict (which
-- is published but not stored here, since the request_id already has its
-- decision). The ledger is per partition because a decision may depend only
-- on its own partition's log: a request_id reused for names in two
-- partitions gets a decision in each, and the API answers request_conflict
-- for any reuse it sees once one of them is stored.
CREATE TABLE requests (
    request_id      uuid    NOT NULL,                  -- the claim's request_id, or one derived from its position when the claim had none
    claim_partition integer NOT NULL,                  -- the decided claim's place in the claims topic
    claim_offset    bigint  NOT NULL,
    user_id         text    NOT NULL,                  -- as in the claim (text: an invalid claim may carry anything; NUL is replaced by U+FFFD)
    username        text    NOT NULL,                  -- as typed in the claim (NUL replaced by U+FFFD)
    canonical       text,                              -- canonical form; null when the username broke the policy
    outcome         text    NOT NULL CHECK (outcome IN ('registered', 'rejected')),
    reason          text,                              -- taken, confusable, reserved, invalid; null when registered
    decision        bytea   NOT NULL,                  -- the exact JSON published to registrations, so every copy is identical
    PRIMARY KEY (request_id, claim_partition)
);
CREATE UNIQUE INDEX requests_claim_position ON requests (claim_partition, claim_offset);

-- Decisions committed but not yet known to be published. The relay
-- publishes them in id order once their transaction commits; the rows Kafka
-- acknowledged are deleted by the partition's next round's transaction (or
-- after a second without one). A crash in between publishes the same bytes
-- again.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,             -- publication order within a partition
    claim_partition integer   NOT NULL,                -- registrations partition to publish to (equal to the claim's)
    key             bytea     NOT NULL,                -- record key, equal to the claim's
    event_type      text      NOT NULL,                -- UsernameRegistered or ClaimRejected
    value           bytea     NOT NULL                 -- the decision JSON
);
CREATE INDEX outbox_partition ON outbox (claim_partition, id);
