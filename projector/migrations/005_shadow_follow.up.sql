-- A shadow follows its name (docs/design.md, "A shadow follows its
-- name"): the decisions of ShadowFollowing records, the follow-ups a
-- release, rename or transfer of a name with a shadow writes for the
-- shadow's key.
ALTER TABLE requests DROP CONSTRAINT requests_outcome_check;
ALTER TABLE requests ADD CONSTRAINT requests_outcome_check CHECK (outcome IN
    ('registered', 'rejected', 'released', 'renaming', 'renamed', 'reserved', 'unreserved', 'transferred',
     'frozen', 'carried', 'activated', 'shadow_dropped', 'shadow_transferred'));
