-- The username policy upgrade (registry policy upgrade; docs/design.md
-- "Upgrading the username policy"). The version a partition decides under
-- becomes state that follows from its log: a PolicyFreezing decision
-- freezes it, HolderCarried decisions stage the entries carried into it,
-- and a PolicyActivating decision replaces its entries of the old version
-- by the staged ones. Like everything in the projection, these rows follow
-- from the decisions (projector/internal/projection).

-- The version the registry started under (the version recorded before any
-- upgrade), so a replay from the first record knows where to begin; and
-- the upgrade under way, which the API answers with 503 and Retry-After.
ALTER TABLE username_policy
    ADD COLUMN initial_version integer CHECK (initial_version > 0),  -- version of the registry's first records; null means version
    ADD COLUMN upgrading_to    integer CHECK (upgrading_to > 0);     -- set by registry policy upgrade while it runs; null otherwise
UPDATE username_policy SET initial_version = version;


ALTER TABLE claim_partitions
    ADD COLUMN policy_version integer CHECK (policy_version > 0),     -- the version the partition decides under once an activation set it; null: username_policy.initial_version
    ADD COLUMN frozen_to      integer CHECK (frozen_to > 0),          -- set by a PolicyFreezing decision until the partition's activation: the version it moves to
    ADD COLUMN staged         integer NOT NULL DEFAULT 0 CHECK (staged >= 0); -- carried entries staged for the activation

-- Outcomes of the upgrade's records.
ALTER TABLE requests DROP CONSTRAINT requests_outcome_check;
ALTER TABLE requests ADD CONSTRAINT requests_outcome_check CHECK (outcome IN
    ('registered', 'rejected', 'released', 'renaming', 'renamed', 'reserved', 'unreserved', 'transferred',
     'frozen', 'carried', 'activated'));

-- Holders: a name keeps the version it was won under, and holders that a
-- policy upgrade found under one key stay, together, as a grandfathered
-- group. The constraints allow exactly that and nothing else:
--   * an ordinary holder is alone on its key and, within its policy
--     version, on its canonical name (usernames_key_ordinary,
--     usernames_canonical_ordinary);
--   * grandfathered members may share a key, never a canonical name within
--     it (the primary key);
--   * no key has an ordinary holder beside grandfathered members
--     (usernames_no_ordinary_beside_group: an exclusion constraint, which
--     needs btree_gist for text equality and boolean inequality in GiST).
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE usernames
    ADD COLUMN granted_under integer CHECK (granted_under > 0),       -- policy version the name was won under; null: written before this migration (the initial version)
    ADD COLUMN grandfathered boolean NOT NULL DEFAULT false,          -- a member of a grandfathered group
    ADD COLUMN invalid       boolean NOT NULL DEFAULT false,          -- carried by an upgrade although the partition's version refuses the name as typed
    ADD COLUMN policy_version integer CHECK (policy_version > 0);     -- policy version that computed canonical and key (the partition's when the row was written)
-- Every name held before this migration was won under the recorded version
-- (a registry never mixed versions).
UPDATE usernames SET granted_under = (SELECT version FROM username_policy) WHERE granted_under IS NULL;
UPDATE usernames SET policy_version = (SELECT version FROM username_policy) WHERE policy_version IS NULL;
ALTER TABLE usernames DROP CONSTRAINT usernames_pkey;
ALTER TABLE usernames DROP CONSTRAINT usernames_key_key;
ALTER TABLE usernames ADD PRIMARY KEY (key, canonical);
CREATE UNIQUE INDEX usernames_key_ordinary ON usernames (key) WHERE NOT grandfathered;
-- Canonical forms are unique per version: while an upgrade activates one
-- partition after another, a name carried to its new partition meets its
-- old row in a partition not yet activated, under the same canonical form.
-- Within one version a canonical form has one key, so one partition.
CREATE UNIQUE INDEX usernames_canonical_ordinary ON usernames (canonical, policy_version) WHERE NOT grandfathered;
CREATE INDEX usernames_canonical ON usernames (canonical);
ALTER TABLE usernames ADD CONSTRAINT usernames_no_ordinary_beside_group
    EXCLUDE USING gist (key WITH =, grandfathered WITH <>);

-- Carried entries waiting for their partition's activation (a
-- HolderCarried decision stages one; the activation moves the partition's
-- rows into usernames, holds and reservations and deletes them here).
CREATE TABLE carried (
    partition     integer     NOT NULL,                -- the partition of key, where the HolderCarried record is
    request_id    uuid        NOT NULL,                -- the HolderCarried record's request_id
    kind          text        NOT NULL CHECK (kind IN ('holder', 'hold', 'reservation', 'shadow')), -- shadow: a refused name again under its displayed key
    key           text        NOT NULL,                -- key under the new version
    canonical     text        NOT NULL,                -- canonical form under the new version
    username      text        NOT NULL,                -- as typed when won
    user_id       uuid,                                -- holder, or the hold's former holder; null for a reservation
    orig_request  uuid        NOT NULL,                -- the request that won the name (the release, the reservation)
    claim_offset  bigint      NOT NULL,                -- the HolderCarried record's offset
    at            timestamptz,                         -- holder: registered_at; reservation: reserved_at; hold: held_until
    granted_under integer     NOT NULL,                -- version the name was won under
    invalid       boolean     NOT NULL,                -- the new version refuses the name as typed
    PRIMARY KEY (partition, request_id)
);

-- The plan of an upgrade (written by registry policy upgrade before its
-- first activation): how many entries it carried to each partition, so a
-- resumed upgrade writes the same activation markers.
CREATE TABLE policy_upgrade_plan (
    to_version integer NOT NULL,                       -- the version upgraded to
    partition  integer NOT NULL,                       -- claims partition
    carried    integer NOT NULL CHECK (carried >= 0),  -- HolderCarried records written to the partition
    PRIMARY KEY (to_version, partition)
);
