package baseline

// The baseline's tables live next to the registry's in whatever database
// it is given, prefixed baseline_ so they never touch the registry's own.
// They are created at start rather than by the registry's migrations: the
// baseline is a measuring tool, not part of the schema the registry ships.

// safeSchema is the classic design: the database's UNIQUE constraints
// decide who gets a name.
const safeSchema = `
CREATE TABLE IF NOT EXISTS baseline_usernames (
    canonical     text        PRIMARY KEY,            -- canonical form (claims.Normalize); one holder per name
    key           text        NOT NULL UNIQUE,        -- confusable skeleton; one holder per family of look-alikes
    username      text        NOT NULL,               -- as typed in the winning request
    user_id       uuid        NOT NULL,               -- the holder
    request_id    uuid        NOT NULL,               -- the winning request
    registered_at timestamptz NOT NULL DEFAULT now()  -- when the winning transaction started
);
CREATE TABLE IF NOT EXISTS baseline_requests (
    request_id     uuid PRIMARY KEY,                  -- one decision per request_id, so a retry is answered alike
    user_id        uuid NOT NULL,                     -- the payload, to tell a retry from a reuse
    username       text NOT NULL,                     -- as typed
    canonical      text NOT NULL,                     -- canonical form of username
    status         text NOT NULL,                     -- registered or rejected
    reason         text,                              -- taken, confusable or reserved; null when registered
    conflicts_with text                               -- canonical name of the holder, for taken and confusable
);`

// naiveSchema is the same data without a single constraint: the check
// happens in Go, between statements, which is the race the registry exists
// to prevent. The indexes are plain so the SELECTs stay fast; only
// uniqueness is missing.
const naiveSchema = `
CREATE TABLE IF NOT EXISTS baseline_naive_usernames (
    canonical     text        NOT NULL,               -- canonical form; NOT unique, by design
    key           text        NOT NULL,               -- confusable skeleton; NOT unique, by design
    username      text        NOT NULL,               -- as typed in the request that inserted the row
    user_id       uuid        NOT NULL,               -- the holder (one of them, after a race)
    request_id    uuid        NOT NULL,               -- the request that inserted the row
    registered_at timestamptz NOT NULL DEFAULT now()  -- when the row was inserted
);
CREATE INDEX IF NOT EXISTS baseline_naive_usernames_key ON baseline_naive_usernames (key);
CREATE INDEX IF NOT EXISTS baseline_naive_usernames_canonical ON baseline_naive_usernames (canonical);
CREATE TABLE IF NOT EXISTS baseline_naive_requests (
    request_id     uuid NOT NULL,                     -- NOT unique: two racing retries may both insert
    user_id        uuid NOT NULL,                     -- the payload, to tell a retry from a reuse
    username       text NOT NULL,                     -- as typed
    canonical      text NOT NULL,                     -- canonical form of username
    status         text NOT NULL,                     -- registered or rejected
    reason         text,                              -- taken, confusable or reserved; null when registered
    conflicts_with text,                              -- canonical name of the holder, for taken and confusable
    decided_at     timestamptz NOT NULL DEFAULT clock_timestamp() -- orders duplicate rows: the first one answers
);
CREATE INDEX IF NOT EXISTS baseline_naive_requests_id ON baseline_naive_requests (request_id, decided_at);`

const (
	dropSafe  = `DROP TABLE IF EXISTS baseline_usernames, baseline_requests`
	dropNaive = `DROP TABLE IF EXISTS baseline_naive_usernames, baseline_naive_requests`

	// setupLock serialises two baselines starting on one database, since
	// CREATE TABLE IF NOT EXISTS is not safe against itself.
	setupLock = 0x62617365 // "base"
)

// Queries of the safe variant.
const (
	// insertHolder does nothing when either UNIQUE constraint is hit; a
	// conflicting transaction still in flight makes it wait for that one
	// to finish, so the holder read next is committed.
	insertHolder = `
INSERT INTO baseline_usernames (canonical, key, username, user_id, request_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING`

	holderByKey = `SELECT canonical, user_id FROM baseline_usernames WHERE key = $1`

	insertRequest = `
INSERT INTO baseline_requests (request_id, user_id, username, canonical, status, reason, conflicts_with)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), NULLIF($7, ''))
ON CONFLICT (request_id) DO NOTHING`

	requestByID = `
SELECT user_id, username, canonical, status, coalesce(reason, ''), coalesce(conflicts_with, '')
FROM baseline_requests WHERE request_id = $1`

	registrationByCanonical = `
SELECT username, canonical, user_id, request_id, registered_at
FROM baseline_usernames WHERE canonical = $1`
)

// Queries of the naive variant: each runs on its own, outside any
// transaction, and nothing stops two of them interleaving.
const (
	naiveHolderByKey = `
SELECT canonical, user_id FROM baseline_naive_usernames WHERE key = $1
ORDER BY registered_at LIMIT 1`

	naiveInsertHolder = `
INSERT INTO baseline_naive_usernames (canonical, key, username, user_id, request_id)
VALUES ($1, $2, $3, $4, $5)`

	naiveInsertRequest = `
INSERT INTO baseline_naive_requests (request_id, user_id, username, canonical, status, reason, conflicts_with)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), NULLIF($7, ''))`

	naiveRequestByID = `
SELECT user_id, username, canonical, status, coalesce(reason, ''), coalesce(conflicts_with, '')
FROM baseline_naive_requests WHERE request_id = $1
ORDER BY decided_at LIMIT 1`

	naiveRegistrationByCanonical = `
SELECT username, canonical, user_id, request_id, registered_at
FROM baseline_naive_usernames WHERE canonical = $1
ORDER BY registered_at LIMIT 1`
)
