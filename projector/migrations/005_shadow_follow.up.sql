-- A shadow follows its name (docs/design.md, "A shadow follows its
-- name"): the decisions of ShadowFollowing records, the follow-ups a
-- release, rename or transfer of a name with a shadow writes for the
-- shadow's key.
ALTER TABLE requests DROP CONSTRAINT requests_outcome_check;
ALTER TABLE requests ADD CONSTRAINT requests_outcome_check CHECK (outcome IN
    ('registered', 'rejected', 'released', 'renaming', 'renamed', 'reserved', 'unreserved', 'transferred',
     'frozen', 'carried', 'activated', 'shadow_dropped', 'shadow_transferred'));

-- A projector built before ShadowFollowing existed reads one as a record
-- it cannot read and would store the decision rejected/invalid (detail
-- `claim record could not be read: not a registry event: event type
-- "ShadowFollowing", want one of [...]`): a wrong decision, after which
-- the shadow would stay and a replay by a newer build would differ. This
-- constraint refuses that row, so such a projector fails its round and
-- retries (loudly: "round failed; retrying", the partition's lag grows)
-- until a projector that knows the type decides the record. The hex is
-- the UTF-8 of `event type \"ShadowFollowing\"` as the decision's JSON
-- encodes it. Every new command type adds its name here the same way.
ALTER TABLE requests ADD CONSTRAINT requests_unknown_type_needs_newer_projector CHECK (
    reason IS DISTINCT FROM 'invalid'
    OR position(decode('6576656e742074797065205c22536861646f77466f6c6c6f77696e675c22', 'hex') IN decision) = 0);
