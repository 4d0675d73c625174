//! The store's SQLite schema, created on open (idempotent).
//!
//! `documents` holds each document's CRDT state and its materialized body;
//! `change_log` numbers every applied write (AUTOINCREMENT: sequence numbers
//! are never reused, even after compaction empties the table); `cursors`,
//! `positions`, `shadows`, `dead_letters`, `conflicts` and `provider_stats` are what their
//! names say. Writers take the lock up front (`BEGIN IMMEDIATE`), so several
//! processes append to one gap-free log.

/// 2: `change_log.origin_holds`. 3: `dead_letters.doc_key`, `due_ms`
/// (writes waiting for a row they reference; a waiting letter a build
/// between the two wrote has neither, and becomes an ordinary one).
/// 4: `conflicts` (made by [`DDL`]). A store of this version is opened
/// without writing anything.
pub const VERSION: i64 = 4;

/// Upgrades a store of an older schema, after [`DDL`] (which creates what is
/// missing). `(from version, statements)`.
pub const UPGRADES: &[(i64, &str)] = &[
    (
        1,
        "ALTER TABLE change_log ADD COLUMN origin_holds INTEGER NOT NULL DEFAULT 0",
    ),
    (
        2,
        "ALTER TABLE dead_letters ADD COLUMN doc_key TEXT;
         ALTER TABLE dead_letters ADD COLUMN due_ms INTEGER;
         UPDATE dead_letters SET stage = 'sink' WHERE stage = 'sink-waiting';",
    ),
];

/// Indexes on columns an upgrade may have added: made after [`UPGRADES`].
pub const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS dead_letters_due ON dead_letters (provider, stage, due_ms);
CREATE INDEX IF NOT EXISTS dead_letters_doc ON dead_letters (provider, doc_key);
";

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    collection  TEXT NOT NULL,
    id          TEXT NOT NULL,      -- canonical JSON of _id
    body        TEXT,               -- materialized JSON, NULL when deleted
    state       TEXT NOT NULL,      -- merge state (merge::DocState)
    updated_seq INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS change_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    collection   TEXT NOT NULL,
    id           TEXT NOT NULL,
    origin       TEXT NOT NULL,
    write        TEXT NOT NULL,     -- merge::Write as JSON
    at_ms        INTEGER NOT NULL,  -- when the store committed it
    source_ts_ms INTEGER,           -- the source's commit time
    -- the merged document equals what the origin reported: its own sink
    -- has nothing to write for this entry
    origin_holds INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cursors (
    name       TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    provider        TEXT PRIMARY KEY,
    position        TEXT NOT NULL,
    updated_ms      INTEGER NOT NULL,
    last_commit_ms  INTEGER
);
-- Per provider and document: `seen` is the last image the provider's own
-- feed reported (its history, in commit order: the next change's before
-- image); `held` is what the provider is believed to hold now (the last image
-- seen or written), which decides whether a sink must write.
CREATE TABLE IF NOT EXISTS shadows (
    provider   TEXT NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    held       BLOB,               -- NULL: same as seen; empty: unknown
    seen       BLOB,               -- shadow::Shadow::encode
    PRIMARY KEY (provider, collection, id)
) WITHOUT ROWID;
-- What a sink is about to write (recorded before the provider write): the
-- provider's feed reporting it is recognised as our echo even if it arrives
-- before the sink commits its shadow.
CREATE TABLE IF NOT EXISTS sink_intents (
    provider   TEXT NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    shadow     BLOB NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sink_intents_doc ON sink_intents (provider, collection, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    provider   TEXT NOT NULL,
    collection TEXT,
    stage      TEXT NOT NULL,
    field      TEXT,
    reason     TEXT NOT NULL,
    record     TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 1,
    doc_key    TEXT,               -- a sink letter's document id key
    due_ms     INTEGER             -- a waiting letter's next try
);
CREATE INDEX IF NOT EXISTS dead_letters_provider ON dead_letters (provider);
CREATE TABLE IF NOT EXISTS conflicts (
    at_ms      INTEGER NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    field      TEXT NOT NULL,
    kept_from  TEXT NOT NULL,
    kept       TEXT NOT NULL,       -- JSON, cut to 200 characters
    lost_from  TEXT NOT NULL,
    lost       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conflicts_at ON conflicts (at_ms);
CREATE TABLE IF NOT EXISTS provider_stats (
    provider        TEXT PRIMARY KEY,
    received        INTEGER NOT NULL DEFAULT 0,
    applied         INTEGER NOT NULL DEFAULT 0,
    echoes          INTEGER NOT NULL DEFAULT 0,
    filtered        INTEGER NOT NULL DEFAULT 0,
    sink_writes     INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,
    last_change_ms  INTEGER,
    last_source_lag_ms INTEGER,
    last_error      TEXT,
    last_error_ms   INTEGER,
    details         TEXT            -- provider-specific health (JSON)
);
";
