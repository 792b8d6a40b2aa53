//! The index, in SQLite (a file, WAL mode) or PostgreSQL ([`crate::backend`]). It is derived
//! data: everything in it was verified against a log's checkpoints first, and it can be
//! rebuilt from the logs at any time. A follower commits a verified chunk of a log in one
//! transaction, together with the log's new verified size and tree edge, and only if the log
//! is still at the size the chunk starts from: after a crash following resumes exactly where
//! the last commit left it, and two explorers sharing a database never index an entry twice.

use std::path::PathBuf;
use std::sync::Mutex;

use reprolog_verifier::dating::rfc3339;
use reprolog_verifier::explorer_api::{IndexedBuilder, PairAgreement, Totals};
use reprolog_verifier::locks;

use crate::aggregates::{self, EntryChange};
pub use crate::backend::DbError;
use crate::backend::{insert_rows, Backend, Value};

const SQLITE_SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA cache_size = -65536;
PRAGMA wal_autocheckpoint = 16384;
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    edge TEXT NOT NULL DEFAULT '',
    checkpoint TEXT,
    cosigned_by TEXT NOT NULL DEFAULT '',
    stopped TEXT,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    log INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    hash_part TEXT NOT NULL,
    store_path TEXT NOT NULL,
    name TEXT NOT NULL,
    builder TEXT NOT NULL,
    key TEXT NOT NULL,
    key_name TEXT NOT NULL,
    nar_hash TEXT NOT NULL,
    nar_size INTEGER NOT NULL,
    refs TEXT NOT NULL,
    deriver TEXT,
    logged_at INTEGER,
    void TEXT,
    PRIMARY KEY (log, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_events (
    log INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (log, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    log INTEGER NOT NULL,
    size INTEGER NOT NULL,
    time INTEGER NOT NULL,
    PRIMARY KEY (log, size)
);
CREATE VIRTUAL TABLE IF NOT EXISTS path_names USING fts5(
    hash_part UNINDEXED, name, tokenize = 'trigram'
);
";

/// The same tables in PostgreSQL's types. Creating them is serialised by an advisory lock, so
/// that explorers starting together over one database do not race.
const POSTGRES_SCHEMA: &str = "
SELECT pg_advisory_lock(7210571);
CREATE TABLE IF NOT EXISTS logs (
    id BIGSERIAL PRIMARY KEY,
    origin TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    size BIGINT NOT NULL DEFAULT 0,
    edge TEXT NOT NULL DEFAULT '',
    checkpoint TEXT,
    cosigned_by TEXT NOT NULL DEFAULT '',
    stopped TEXT,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    log BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    kind TEXT NOT NULL,
    hash_part TEXT NOT NULL,
    store_path TEXT NOT NULL,
    name TEXT NOT NULL,
    builder TEXT NOT NULL,
    key TEXT NOT NULL,
    key_name TEXT NOT NULL,
    nar_hash TEXT NOT NULL,
    nar_size BIGINT NOT NULL,
    refs TEXT NOT NULL,
    deriver TEXT,
    logged_at BIGINT,
    void TEXT,
    PRIMARY KEY (log, idx)
);
CREATE TABLE IF NOT EXISTS key_events (
    log BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (log, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    log BIGINT NOT NULL,
    size BIGINT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY (log, size)
);
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE IF NOT EXISTS path_names (hash_part TEXT NOT NULL, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS path_names_by_trigram ON path_names USING gin (name gin_trgm_ops);
";

/// The indexes both databases get.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS claims_by_path ON claims (hash_part);
";

/// Where the index is.
#[derive(Clone, Debug)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `sqlite://PATH` or `postgres://…` (`postgresql://…`).
    pub fn parse(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        url.strip_prefix("sqlite://")
            .filter(|p| !p.is_empty())
            .map(|p| Location::Sqlite(PathBuf::from(p)))
            .ok_or_else(|| {
                DbError::Other(format!(
                    "{url}: the database URL must be sqlite://PATH or postgres://…"
                ))
            })
    }

    fn connect(&self) -> Result<Box<dyn Backend>, DbError> {
        match self {
            Location::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                // Room for every statement the index runs, the multi-row inserts' included.
                conn.set_prepared_statement_cache_capacity(256);
                Ok(Box::new(conn))
            }
            Location::Postgres(url) => Ok(Box::new(crate::backend::Postgres::connect(url)?)),
        }
    }

    /// What `/api/v1/status` and the start-up lines show: a file, or a server without its
    /// password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite://{}", path.display()),
            Location::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("postgres://{host}")
            }
        }
    }
}

/// One log's following state, as last committed.
#[derive(Clone, Debug, Default)]
pub struct LogRow {
    pub id: i64,
    pub origin: String,
    pub url: String,
    /// Entries verified and indexed.
    pub size: u64,
    /// The tree's right edge at `size` (`CompactRange`), base64 hashes joined by commas.
    pub edge: String,
    /// The last accepted checkpoint note.
    pub checkpoint: Option<String>,
    /// Its cosigners, joined by commas.
    pub cosigned_by: String,
    /// Why following stopped.
    pub stopped: Option<String>,
    /// What failed last while following (a log down, a checkpoint short of its quorum).
    pub last_error: Option<String>,
}

/// A claim to index.
#[derive(Clone, Debug)]
pub struct NewClaim {
    pub index: u64,
    pub kind: &'static str,
    pub store_path: String,
    pub hash_part: String,
    pub name: String,
    pub builder: String,
    /// The key, `name:base64`.
    pub key: String,
    pub key_name: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub logged_at: Option<u64>,
}

/// What one verified chunk of a log adds to the index, committed at once.
#[derive(Debug, Default)]
pub struct Chunk {
    pub claims: Vec<NewClaim>,
    /// Key events, by index, as entry text.
    pub key_events: Vec<(u64, String)>,
    /// Claims made void by revocations: the key, the first void index and why.
    pub voids: Vec<(String, u64, String)>,
    /// Dated checkpoints of the log: size and time.
    pub checkpoints: Vec<(u64, u64)>,
    /// The new verified size and edge.
    pub size: u64,
    pub edge: String,
    /// The checkpoint the chunk was verified against, and its cosigners.
    pub checkpoint: String,
    pub cosigned_by: String,
}

/// The index database: one connection for the follower's writes, a pool for readers.
pub struct Db {
    location: Location,
    writer: Mutex<Box<dyn Backend>>,
    readers: Mutex<Vec<Box<dyn Backend>>>,
}

/// Leadership of one log: in PostgreSQL, an advisory lock held by a connection of its own, so
/// that exactly one explorer follows each log and another takes over when it dies (its
/// connection closes, and the lock with it). In SQLite, one process owns the file.
pub struct Leader(Option<Box<dyn Backend>>);

impl Leader {
    /// Whether the lock is still held (its connection still answers).
    pub fn holds(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(conn) => conn.query("SELECT 1", &[]).is_ok(),
        }
    }
}

const LOG_COLUMNS: &str =
    "id, origin, url, size, edge, checkpoint, cosigned_by, stopped, last_error";

impl Db {
    /// Opens the index, creating its tables (and the SQLite file's directory) if needed.
    pub fn open(location: Location) -> Result<Self, DbError> {
        if let Location::Sqlite(path) = &location {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DbError::Other(format!("creating {}: {e}", dir.display())))?;
            }
        }
        let mut writer = location.connect()?;
        match &location {
            Location::Sqlite(_) => writer.batch(SQLITE_SCHEMA)?,
            Location::Postgres(_) => {
                let created = writer
                    .batch(POSTGRES_SCHEMA)
                    .and_then(|()| writer.batch(INDEXES));
                writer.batch("SELECT pg_advisory_unlock(7210571)")?;
                created?;
            }
        }
        writer.batch(INDEXES)?;
        writer.batch(aggregates::SCHEMA)?;
        check_version(writer.as_mut())?;
        Ok(Db {
            location,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs `f` on a reader connection. A connection that failed is dropped, not pooled.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let pooled = locks::lock(&self.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.location.connect()?,
        };
        let result = f(conn.as_mut());
        if result.is_ok() {
            locks::lock(&self.readers).push(conn);
        }
        result
    }

    /// Takes the lead on following `origin`, if no other explorer has it.
    pub fn lead(&self, origin: &str) -> Result<Option<Leader>, DbError> {
        match &self.location {
            Location::Sqlite(_) => Ok(Some(Leader(None))),
            Location::Postgres(_) => {
                let mut conn = self.location.connect()?;
                let got = conn.query(
                    "SELECT CASE WHEN pg_try_advisory_lock(hashtext($1)) THEN 1 ELSE 0 END",
                    &[origin.into()],
                )?;
                let held = got.first().and_then(|r| r.first()) == Some(&Value::Int(1));
                Ok(held.then(|| Leader(Some(conn))))
            }
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = locks::lock(&self.writer);
        let result = f(conn.as_mut());
        if result.is_err() {
            // A broken connection is replaced for the next write.
            if let Ok(fresh) = self.location.connect() {
                *conn = fresh;
            }
        }
        result
    }

    /// The log's row, created when the explorer first meets the log.
    pub fn log(&self, origin: &str, url: &str) -> Result<LogRow, DbError> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO logs (origin, url) VALUES ($1, $2)
                 ON CONFLICT (origin) DO UPDATE SET url = excluded.url",
                &[origin.into(), url.into()],
            )?;
            let rows = conn.query(
                &format!("SELECT {LOG_COLUMNS} FROM logs WHERE origin = $1"),
                &[origin.into()],
            )?;
            rows.first()
                .map(|r| log_row(r))
                .unwrap_or_else(|| Err(DbError::Other(format!("no row for the log {origin}"))))
        })
    }

    /// Every log's row.
    pub fn logs(&self) -> Result<Vec<LogRow>, DbError> {
        self.read(|conn| {
            conn.query(
                &format!("SELECT {LOG_COLUMNS} FROM logs ORDER BY origin"),
                &[],
            )?
            .iter()
            .map(|r| log_row(r))
            .collect()
        })
    }

    /// The key events of a log, in index order, as entry text.
    pub fn key_events(&self, log: i64) -> Result<Vec<(u64, String)>, DbError> {
        self.read(|conn| {
            conn.query(
                "SELECT idx, entry FROM key_events WHERE log = $1 ORDER BY idx",
                &[log.into()],
            )?
            .iter()
            .map(|r| Ok((r[0].int()? as u64, r[1].text()?)))
            .collect()
        })
    }

    /// The dated checkpoints of a log above `size`.
    pub fn checkpoints_above(&self, log: i64, size: u64) -> Result<Vec<(u64, u64)>, DbError> {
        self.read(|conn| {
            conn.query(
                "SELECT size, time FROM checkpoints WHERE log = $1 AND size > $2 ORDER BY size",
                &[log.into(), size.into()],
            )?
            .iter()
            .map(|r| Ok((r[0].int()? as u64, r[1].int()? as u64)))
            .collect()
        })
    }

    /// The largest dated checkpoint size of a log, 0 when none.
    pub fn dated_to(&self, log: i64) -> Result<u64, DbError> {
        self.read(|conn| {
            let rows = conn.query(
                "SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE log = $1",
                &[log.into()],
            )?;
            Ok(rows.first().map_or(Ok(0), |r| r[0].int())? as u64)
        })
    }

    /// Commits a verified chunk of log `log`, which must be at `from` still: one transaction,
    /// so that a crash leaves the chunk either wholly in or wholly out. A log another explorer
    /// moved on is an error, and nothing is written.
    pub fn commit(&self, log: i64, from: u64, chunk: &Chunk) -> Result<(), DbError> {
        self.write(|conn| {
            conn.batch("BEGIN")?;
            let result = commit_chunk(conn, log, from, chunk);
            match &result {
                Ok(()) => conn.batch("COMMIT")?,
                Err(_) => {
                    let _ = conn.batch("ROLLBACK");
                }
            }
            result
        })
    }

    /// Records that following a log stopped, and why; what was indexed stays.
    pub fn stop(&self, log: i64, why: &str) -> Result<(), DbError> {
        self.write(|conn| {
            conn.execute(
                "UPDATE logs SET stopped = $2 WHERE id = $1",
                &[log.into(), why.into()],
            )
            .map(drop)
        })
    }

    /// Records what failed last while following (cleared by the next commit).
    pub fn note_error(&self, log: i64, error: &str) -> Result<(), DbError> {
        self.write(|conn| {
            conn.execute(
                "UPDATE logs SET last_error = $2 WHERE id = $1",
                &[log.into(), error.into()],
            )
            .map(drop)
        })
    }
}

/// The version of the index's tables this explorer writes. An index of another version was
/// made by another explorer and is refused: it is derived data, rebuilt from the logs.
const VERSION: i64 = 5;

fn check_version(conn: &mut dyn Backend) -> Result<(), DbError> {
    conn.batch("CREATE TABLE IF NOT EXISTS meta (version BIGINT NOT NULL)")?;
    let found = conn.query("SELECT version FROM meta", &[])?;
    match found.first().map(|r| r[0].int()).transpose()? {
        Some(VERSION) => Ok(()),
        Some(other) => Err(DbError::Other(format!(
            "the index is of version {other}, made by another explorer (this one writes \
             version {VERSION}); delete it and the explorer rebuilds it from the logs"
        ))),
        None => {
            let claims = conn.query("SELECT COUNT(*) FROM claims", &[])?;
            if claims.first().map(|r| r[0].int()).transpose()? != Some(0) {
                return Err(DbError::Other(
                    "the index was made by an earlier explorer, without its aggregates; \
                     delete it and the explorer rebuilds it from the logs"
                        .into(),
                ));
            }
            conn.execute("INSERT INTO meta (version) VALUES ($1)", &[VERSION.into()])
                .map(drop)
        }
    }
}

fn commit_chunk(conn: &mut dyn Backend, log: i64, from: u64, chunk: &Chunk) -> Result<(), DbError> {
    // First, and only if the log is still where the chunk starts: in PostgreSQL this takes
    // the log's row lock, so a second writer waits and then finds it moved.
    let moved = conn.execute(
        "UPDATE logs SET size = $2, edge = $3, checkpoint = $4, cosigned_by = $5,
         last_error = NULL WHERE id = $1 AND size = $6",
        &[
            log.into(),
            chunk.size.into(),
            chunk.edge.as_str().into(),
            chunk.checkpoint.as_str().into(),
            chunk.cosigned_by.as_str().into(),
            from.into(),
        ],
    )?;
    if moved != 1 {
        return Err(DbError::Other(format!(
            "the index no longer holds log {log} at size {from}: another explorer follows it"
        )));
    }
    let mut touched = std::collections::BTreeSet::new();
    let mut entries: Vec<EntryChange> = Vec::new();
    let mut rows = Vec::with_capacity(chunk.claims.len());
    for c in &chunk.claims {
        touched.insert(c.hash_part.clone());
        entries.push(EntryChange {
            builder: c.builder.clone(),
            logged_at: c.logged_at,
            delta: 1,
        });
        rows.push(vec![
            log.into(),
            c.index.into(),
            c.kind.into(),
            c.hash_part.as_str().into(),
            c.store_path.as_str().into(),
            c.name.as_str().into(),
            c.builder.as_str().into(),
            c.key.as_str().into(),
            c.key_name.as_str().into(),
            c.nar_hash.as_str().into(),
            c.nar_size.into(),
            c.references.join(" ").into(),
            c.deriver.as_deref().into(),
            c.logged_at.into(),
        ]);
    }
    insert_rows(
        conn,
        "INSERT INTO claims (log, idx, kind, hash_part, store_path, name, builder, key,
         key_name, nar_hash, nar_size, refs, deriver, logged_at)",
        "",
        rows,
    )?;
    for (index, text) in &chunk.key_events {
        conn.execute(
            "INSERT INTO key_events (log, idx, entry) VALUES ($1, $2, $3)",
            &[log.into(), (*index).into(), text.as_str().into()],
        )?;
    }
    for (key, void_from, why) in &chunk.voids {
        for r in conn.query(
            "SELECT hash_part, builder, logged_at FROM claims
             WHERE log = $1 AND key = $2 AND idx >= $3 AND void IS NULL",
            &[log.into(), key.as_str().into(), (*void_from).into()],
        )? {
            touched.insert(r[0].text()?);
            entries.push(EntryChange {
                builder: r[1].text()?,
                logged_at: r[2].opt_int()?.map(|t| t as u64),
                delta: -1,
            });
        }
        conn.execute(
            "UPDATE claims SET void = $4 WHERE log = $1 AND key = $2 AND idx >= $3
             AND void IS NULL",
            &[
                log.into(),
                key.as_str().into(),
                (*void_from).into(),
                why.as_str().into(),
            ],
        )?;
    }
    for (size, time) in &chunk.checkpoints {
        conn.execute(
            "INSERT INTO checkpoints (log, size, time) VALUES ($1, $2, $3)
             ON CONFLICT (log, size) DO UPDATE SET time = CASE
               WHEN excluded.time < checkpoints.time THEN excluded.time
               ELSE checkpoints.time END",
            &[log.into(), (*size).into(), (*time).into()],
        )?;
    }
    // Claims indexed before their covering checkpoint was dated get their time now.
    let mut dated_late = false;
    if !chunk.checkpoints.is_empty() {
        let undated = "WHERE log = $1 AND logged_at IS NULL
             AND idx < (SELECT MAX(size) FROM checkpoints WHERE log = $1)";
        let dating = conn.query(
            &format!("SELECT idx, hash_part, builder FROM claims {undated} AND void IS NULL"),
            &[log.into()],
        )?;
        conn.execute(
            &format!(
                "UPDATE claims SET logged_at = (SELECT MIN(time) FROM checkpoints
                   WHERE checkpoints.log = claims.log AND checkpoints.size > claims.idx)
                 {undated}"
            ),
            &[log.into()],
        )?;
        dated_late = !dating.is_empty();
        for r in dating {
            let time = conn.query(
                "SELECT logged_at FROM claims WHERE log = $1 AND idx = $2",
                &[log.into(), r[0].clone()],
            )?;
            let logged_at = time.first().map(|t| t[0].opt_int()).transpose()?.flatten();
            touched.insert(r[1].text()?);
            // Counted undated until now: it moves into its bucket.
            for (logged_at, delta) in [(None, -1), (logged_at.map(|t| t as u64), 1)] {
                entries.push(EntryChange {
                    builder: r[2].text()?,
                    logged_at,
                    delta,
                });
            }
        }
    }
    // Only new claims in this chunk: the aggregates may take them as they are.
    let fresh = (chunk.voids.is_empty() && !dated_late).then(|| {
        let mut by_path: std::collections::BTreeMap<String, Vec<aggregates::CountedClaim>> =
            Default::default();
        for c in &chunk.claims {
            by_path.entry(c.hash_part.clone()).or_default().push((
                c.store_path.clone(),
                c.builder.clone(),
                c.nar_hash.clone(),
                c.logged_at.map(|t| t as i64),
            ));
        }
        by_path
    });
    aggregates::update(conn, &touched, &entries, fresh.as_ref())
}

fn log_row(r: &[Value]) -> Result<LogRow, DbError> {
    Ok(LogRow {
        id: r[0].int()?,
        origin: r[1].text()?,
        url: r[2].text()?,
        size: r[3].int()? as u64,
        edge: r[4].text()?,
        checkpoint: r[5].opt_text()?,
        cosigned_by: r[6].text()?,
        stopped: r[7].opt_text()?,
        last_error: r[8].opt_text()?,
    })
}

/// A claim as stored.
#[derive(Clone, Debug)]
pub struct ClaimRow {
    pub log: String,
    pub index: u64,
    pub kind: String,
    pub store_path: String,
    pub builder: String,
    pub key_name: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub logged_at: Option<u64>,
    pub void: Option<String>,
}

/// The columns [`claim_row`] reads, from `claims JOIN logs`.
const CLAIM_COLUMNS: &str = "logs.origin, idx, kind, store_path, builder, key_name, nar_hash,
    nar_size, refs, deriver, logged_at, void";

fn claim_row(r: &[Value]) -> Result<ClaimRow, DbError> {
    Ok(ClaimRow {
        log: r[0].text()?,
        index: r[1].int()? as u64,
        kind: r[2].text()?,
        store_path: r[3].text()?,
        builder: r[4].text()?,
        key_name: r[5].text()?,
        nar_hash: r[6].text()?,
        nar_size: r[7].int()? as u64,
        references: r[8]
            .text()?
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        deriver: r[9].opt_text()?,
        logged_at: r[10].opt_int()?.map(|t| t as u64),
        void: r[11].opt_text()?,
    })
}

/// Every claim about a store path hash part, in (log, index) order.
pub fn claims_of(conn: &mut dyn Backend, hash_part: &str) -> Result<Vec<ClaimRow>, DbError> {
    conn.query(
        &format!(
            "SELECT {CLAIM_COLUMNS} FROM claims JOIN logs ON logs.id = claims.log
             WHERE hash_part = $1 ORDER BY logs.origin, idx"
        ),
        &[hash_part.into()],
    )?
    .iter()
    .map(|r| claim_row(r))
    .collect()
}

/// Distinct store paths whose name contains `q` (through a trigram index: SQLite's FTS5
/// trigram tokenizer, PostgreSQL's `pg_trgm`) or whose hash part starts with it, after
/// `after`, at most `limit`, by store path, and whether more follow.
pub fn search(
    conn: &mut dyn Backend,
    q: &str,
    after: &str,
    limit: usize,
) -> Result<(Vec<(String, String)>, bool), DbError> {
    let page = ((limit + 1) as u64).into();
    let by_name = if conn.is_postgres() {
        let escaped: String = q
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        conn.query(
            "SELECT p.store_path, p.hash_part FROM path_names n
             JOIN path_stats p ON p.hash_part = n.hash_part
             WHERE n.name LIKE $1 ESCAPE '\\' AND p.store_path > $2
             ORDER BY p.store_path LIMIT $3",
            &[format!("%{escaped}%").into(), after.into(), page],
        )?
    } else if q.chars().count() >= 3 {
        // A phrase of one token, which the trigram tokenizer matches as a substring.
        conn.query(
            "SELECT p.store_path, p.hash_part FROM path_names n
             JOIN path_stats p ON p.hash_part = n.hash_part
             WHERE path_names MATCH $1 AND p.store_path > $2
             ORDER BY p.store_path LIMIT $3",
            &[
                format!("name : \"{}\"", q.replace('"', "\"\"")).into(),
                after.into(),
                page,
            ],
        )?
    } else {
        // Shorter than a trigram: the index cannot help.
        conn.query(
            "SELECT p.store_path, p.hash_part FROM path_names n
             JOIN path_stats p ON p.hash_part = n.hash_part
             WHERE instr(n.name, $1) > 0 AND p.store_path > $2
             ORDER BY p.store_path LIMIT $3",
            &[q.into(), after.into(), page],
        )?
    };
    // A hash prefix: a range of the primary key ('{' sorts after every nix32 character).
    let by_hash = conn.query(
        "SELECT store_path, hash_part FROM path_stats
         WHERE hash_part >= $1 AND hash_part < $2 AND store_path > $3
         ORDER BY store_path LIMIT $4",
        &[
            q.into(),
            format!("{q}{{").into(),
            after.into(),
            ((limit + 1) as u64).into(),
        ],
    )?;
    let mut found = std::collections::BTreeMap::new();
    for r in by_name.iter().chain(&by_hash) {
        found.insert(r[0].text()?, r[1].text()?);
    }
    let more = found.len() > limit;
    Ok((found.into_iter().take(limit).collect(), more))
}

/// Per builder identity: claims that count, distinct paths, first and last logged time
/// (from the maintained aggregates).
pub fn builders(conn: &mut dyn Backend) -> Result<Vec<IndexedBuilder>, DbError> {
    conn.query(
        "SELECT builder, entries, paths, first_logged, last_logged FROM builder_stats
         WHERE entries > 0 OR paths > 0 ORDER BY builder",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(IndexedBuilder {
            builder: r[0].text()?,
            entries: r[1].int()? as u64,
            paths: r[2].int()? as u64,
            first_logged: r[3].opt_int()?.map(|t| rfc3339(t as u64)),
            last_logged: r[4].opt_int()?.map(|t| rfc3339(t as u64)),
        })
    })
    .collect()
}

/// The index's totals, from the maintained aggregates.
pub fn totals(conn: &mut dyn Backend) -> Result<Totals, DbError> {
    let builders = conn.query(
        "SELECT COUNT(*) FROM builder_stats WHERE entries > 0 OR paths > 0",
        &[],
    )?;
    let rows = conn.query(
        "SELECT entries, paths, one_builder, reproduced, unreproduced FROM totals WHERE id = 1",
        &[],
    )?;
    let count = |v: &Value| v.int().map(|n| n.max(0) as u64);
    let mut totals = Totals {
        builders: builders
            .first()
            .map(|r| count(&r[0]))
            .transpose()?
            .unwrap_or(0),
        ..Totals::default()
    };
    if let Some(r) = rows.first() {
        totals.entries = count(&r[0])?;
        totals.paths = count(&r[1])?;
        totals.one_builder = count(&r[2])?;
        totals.reproduced = count(&r[3])?;
        totals.unreproduced = count(&r[4])?;
    }
    Ok(totals)
}

/// Every pair of builders with a path in common: paths in common, and those they agree on
/// (each claimed one NAR hash, the same), from the maintained aggregates.
pub fn agreement(conn: &mut dyn Backend) -> Result<Vec<PairAgreement>, DbError> {
    conn.query(
        "SELECT a, b, common, agree FROM pair_stats WHERE common > 0 ORDER BY a, b",
        &[],
    )?
    .iter()
    .map(|r| {
        let (common, agree) = (r[2].int()? as u64, r[3].int()? as u64);
        Ok(PairAgreement {
            a: r[0].text()?,
            b: r[1].text()?,
            common,
            agree,
            disagree: common - agree,
        })
    })
    .collect()
}

/// What a page of disagreements is filtered by, and where it starts.
pub struct DisagreementFilter {
    pub builder: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// The last (time, hash part) of the page before; -1 for an undated path.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// One unreproduced path of a page: its hash part and the time of its latest claim (-1 when
/// undated).
pub type Unreproduced = (String, i64);

/// Unreproduced paths, the most recently logged first, and the cursor of the next page (from
/// the maintained per-path aggregates).
pub fn disagreements(
    conn: &mut dyn Backend,
    f: &DisagreementFilter,
) -> Result<(Vec<Unreproduced>, Option<String>), DbError> {
    let (after_t, after_hash) = match &f.after {
        Some((t, h)) => (Value::Int(*t), Value::Text(h.clone())),
        None => (Value::NullInt, Value::NullText),
    };
    // All unreproduced paths, or one builder's: each an index range, newest first.
    let (from, narrow) = match &f.builder {
        None => ("path_stats", "hashes > 1 AND CAST($1 AS TEXT) IS NULL"),
        Some(_) => ("path_builders", "unreproduced = 1 AND builder = $1"),
    };
    let rows = conn.query(
        &format!(
            "SELECT hash_part, latest FROM {from} WHERE {narrow}
               AND (CAST($2 AS BIGINT) IS NULL OR latest >= $2)
               AND (CAST($3 AS BIGINT) IS NULL OR latest < $3)
               AND (CAST($4 AS BIGINT) IS NULL OR latest < $4
                    OR (latest = $4 AND hash_part < $5))
             ORDER BY latest DESC, hash_part DESC LIMIT $6"
        ),
        &[
            f.builder.as_deref().into(),
            f.since.into(),
            f.until.into(),
            after_t,
            after_hash,
            ((f.limit + 1) as u64).into(),
        ],
    )?;
    let mut found: Vec<Unreproduced> = rows
        .iter()
        .map(|r| Ok((r[0].text()?, r[1].int()?)))
        .collect::<Result<_, DbError>>()?;
    let next = (found.len() > f.limit).then(|| {
        found.truncate(f.limit);
        found.last().map(|(h, t)| format!("{t}:{h}"))
    });
    Ok((found, next.flatten()))
}

/// Per bucket of `seconds` (one of [`aggregates::BUCKETS`]): claims logged, and the paths
/// whose latest claim falls in it, compared, reproduced and unreproduced; `builder` narrows
/// to its claims and the paths it claimed. From the maintained aggregates.
pub fn timeseries(
    conn: &mut dyn Backend,
    seconds: u64,
    builder: Option<&str>,
) -> Result<Vec<(u64, [u64; 4])>, DbError> {
    conn.query(
        "SELECT start, entries, compared, reproduced, unreproduced FROM buckets
         WHERE seconds = $1 AND builder = $2 AND (entries > 0 OR compared > 0)
         ORDER BY start",
        &[seconds.into(), builder.unwrap_or("").into()],
    )?
    .iter()
    .map(|r| {
        let n = |i: usize| r[i].int().map(|v| v.max(0) as u64);
        Ok((n(0)?, [n(1)?, n(2)?, n(3)?, n(4)?]))
    })
    .collect()
}

/// How many claims one page of an export reads.
const EXPORT_PAGE: u64 = 10_000;

/// Calls `each` with every claim logged in `[since, until)` (all when unbounded) by
/// `builder` (any when `None`), in (log, index) order, a page at a time; stops when `each`
/// returns false.
pub fn export(
    conn: &mut dyn Backend,
    builder: Option<&str>,
    since: Option<u64>,
    until: Option<u64>,
    mut each: impl FnMut(ClaimRow) -> bool,
) -> Result<(), DbError> {
    let (mut log, mut idx) = (0i64, -1i64);
    loop {
        let rows = conn.query(
            &format!(
                "SELECT {CLAIM_COLUMNS}, claims.log FROM claims JOIN logs ON logs.id = claims.log
                 WHERE (CAST($1 AS TEXT) IS NULL OR builder = $1)
                   AND (CAST($2 AS BIGINT) IS NULL OR logged_at >= $2)
                   AND (CAST($3 AS BIGINT) IS NULL OR logged_at < $3)
                   AND (claims.log > $4 OR (claims.log = $4 AND idx > $5))
                 ORDER BY claims.log, idx LIMIT $6"
            ),
            &[
                builder.into(),
                since.into(),
                until.into(),
                log.into(),
                idx.into(),
                EXPORT_PAGE.into(),
            ],
        )?;
        let last = rows.len() < EXPORT_PAGE as usize;
        for r in &rows {
            let claim = claim_row(r)?;
            (log, idx) = (r[12].int()?, claim.index as i64);
            if !each(claim) {
                return Ok(());
            }
        }
        if last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn claim(
        index: u64,
        path: usize,
        builder: usize,
        hash: usize,
        logged_at: Option<u64>,
    ) -> NewClaim {
        let hash_part = format!("{:0>32}", path);
        NewClaim {
            index,
            kind: "cache-signature",
            store_path: format!("/nix/store/{hash_part}-p{path}"),
            hash_part,
            name: format!("p{path}"),
            builder: format!("b{builder}"),
            key: format!("k{builder}:key"),
            key_name: format!("k{builder}"),
            nar_hash: format!("sha256:{hash}"),
            nar_size: 1,
            references: Vec::new(),
            deriver: None,
            logged_at,
        }
    }

    /// What the aggregates answer: builders (entries, paths), pairs, unreproduced paths
    /// newest first, hourly buckets, totals.
    type Answers = (
        Vec<(String, u64, u64)>,
        Vec<PairAgreement>,
        Vec<String>,
        Vec<(u64, [u64; 4])>,
        Totals,
    );

    /// The aggregates' answers, recomputed from every claim by brute force.
    fn oracle(conn: &mut dyn Backend) -> Answers {
        let rows = conn
            .query(
                "SELECT hash_part, builder, nar_hash, logged_at FROM claims WHERE void IS NULL",
                &[],
            )
            .unwrap();
        let mut paths: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        let mut latest: BTreeMap<String, i64> = BTreeMap::new();
        let mut entries: BTreeMap<String, u64> = BTreeMap::new();
        let mut buckets: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
        for r in &rows {
            let (p, b, h) = (
                r[0].text().unwrap(),
                r[1].text().unwrap(),
                r[2].text().unwrap(),
            );
            let t = r[3].opt_int().unwrap();
            paths
                .entry(p.clone())
                .or_default()
                .entry(b.clone())
                .or_default()
                .insert(h);
            let l = latest.entry(p).or_insert(-1);
            *l = (*l).max(t.unwrap_or(-1));
            *entries.entry(b).or_default() += 1;
            if let Some(t) = t {
                buckets.entry(t as u64 / 3600 * 3600).or_default()[0] += 1;
            }
        }
        let builders = entries
            .iter()
            .map(|(b, n)| {
                (
                    b.clone(),
                    *n,
                    paths.values().filter(|p| p.contains_key(b)).count() as u64,
                )
            })
            .collect();
        let mut pairs: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut unreproduced = Vec::new();
        let mut totals = Totals {
            entries: rows.len() as u64,
            paths: paths.len() as u64,
            builders: entries.len() as u64,
            ..Totals::default()
        };
        for (p, by) in &paths {
            let hashes: BTreeSet<&String> = by.values().flatten().collect();
            let names: Vec<&String> = by.keys().collect();
            match (names.len(), hashes.len()) {
                (_, 2..) => totals.unreproduced += 1,
                (1, _) => totals.one_builder += 1,
                _ => totals.reproduced += 1,
            }
            for (i, a) in names.iter().enumerate() {
                for b in &names[i + 1..] {
                    let agree = by[*a].len() == 1 && by[*b].len() == 1 && by[*a] == by[*b];
                    let e = pairs.entry(((*a).clone(), (*b).clone())).or_default();
                    e.0 += 1;
                    e.1 += u64::from(agree);
                }
            }
            if hashes.len() > 1 {
                unreproduced.push((latest[p], p.clone()));
            }
            if latest[p] >= 0 && (names.len() > 1 || hashes.len() > 1) {
                let b = buckets.entry(latest[p] as u64 / 3600 * 3600).or_default();
                b[1] += 1;
                b[2] += u64::from(names.len() > 1 && hashes.len() == 1);
                b[3] += u64::from(hashes.len() > 1);
            }
        }
        unreproduced.sort_by(|a, b| b.cmp(a));
        let agreement = pairs
            .into_iter()
            .map(|((a, b), (common, agree))| PairAgreement {
                a,
                b,
                common,
                agree,
                disagree: common - agree,
            })
            .collect();
        (
            builders,
            agreement,
            unreproduced.into_iter().map(|(_, p)| p).collect(),
            buckets.into_iter().collect(),
            totals,
        )
    }

    fn check(db: &Db) {
        db.read(|conn| {
            let (builders_want, agreement_want, unreproduced_want, buckets_want, totals_want) =
                oracle(conn);
            assert_eq!(totals(conn)?, totals_want);
            let got: Vec<(String, u64, u64)> = builders(conn)?
                .into_iter()
                .map(|b| (b.builder, b.entries, b.paths))
                .collect();
            assert_eq!(got, builders_want);
            assert_eq!(agreement(conn)?, agreement_want);
            let filter = DisagreementFilter {
                builder: None,
                since: None,
                until: None,
                after: None,
                limit: 100,
            };
            let got: Vec<String> = disagreements(conn, &filter)?
                .0
                .into_iter()
                .map(|(h, _)| h)
                .collect();
            assert_eq!(got, unreproduced_want);
            // One builder's: only the paths it claimed (and its claims count).
            let mine: BTreeSet<String> = conn
                .query(
                    "SELECT DISTINCT hash_part FROM claims WHERE builder = 'b3' AND void IS NULL",
                    &[],
                )?
                .iter()
                .map(|r| r[0].text())
                .collect::<Result<_, _>>()?;
            let filter = DisagreementFilter {
                builder: Some("b3".into()),
                ..filter
            };
            let got: Vec<String> = disagreements(conn, &filter)?
                .0
                .into_iter()
                .map(|(h, _)| h)
                .collect();
            let want: Vec<String> = unreproduced_want
                .iter()
                .filter(|p| mine.contains(*p))
                .cloned()
                .collect();
            assert_eq!(got, want);
            assert_eq!(timeseries(conn, 3600, None)?, buckets_want);
            Ok(())
        })
        .unwrap();
    }

    /// The maintained aggregates answer as a scan of every claim would, through new claims,
    /// revocations that void earlier ones, and claims dated late.
    #[test]
    fn aggregates_agree_with_a_scan_of_every_claim() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(Location::Sqlite(dir.path().join("index.db"))).unwrap();
        let log = db.log("example.com/log", "http://127.0.0.1:1").unwrap().id;
        let mut size = 0;
        let mut commit = |claims: Vec<NewClaim>,
                          voids: Vec<(String, u64, String)>,
                          checkpoints: Vec<(u64, u64)>| {
            let end = size + claims.len() as u64;
            let chunk = Chunk {
                claims,
                voids,
                checkpoints,
                size: end,
                ..Chunk::default()
            };
            db.commit(log, size, &chunk).unwrap();
            size = end;
        };
        // 200 claims over 40 paths and 4 builders; builder 3 disagrees on every fifth path;
        // every seventh claim undated.
        let claims = (0..200u64)
            .map(|i| {
                let (path, builder) = (i as usize % 40, i as usize / 40 % 4);
                let hash = usize::from(builder == 3 && path % 5 == 0);
                let dated = (i % 7 != 0).then_some(1_000_000 + i * 600);
                claim(i, path, builder, hash, dated)
            })
            .collect();
        commit(claims, vec![], vec![]);
        check(&db);
        // Builder 3's key is revoked as of index 150: its later claims stop counting.
        commit(
            vec![claim(200, 41, 0, 0, Some(1_200_000))],
            vec![("k3:key".into(), 150, "revoked".into())],
            vec![],
        );
        check(&db);
        // A checkpoint dates what was undated.
        commit(
            vec![claim(201, 42, 1, 0, None)],
            vec![],
            vec![(300, 1_300_000)],
        );
        check(&db);
        // Search by name (through the trigram index, and shorter than a trigram) and by
        // hash prefix.
        db.read(|conn| {
            let names = |found: Vec<(String, String)>| -> Vec<String> {
                found
                    .into_iter()
                    .map(|(p, _)| p.rsplit('-').next().unwrap().to_owned())
                    .collect()
            };
            assert_eq!(names(search(conn, "p12", "", 10)?.0), ["p12"]);
            let (found, more) = search(conn, "p1", "", 5)?;
            assert_eq!(names(found), ["p1", "p10", "p11", "p12", "p13"]);
            assert!(more);
            let after = "/nix/store/00000000000000000000000000000013-p13";
            let (found, _) = search(conn, "p1", after, 5)?;
            assert_eq!(names(found), ["p14", "p15", "p16", "p17", "p18"]);
            let prefix = "0000000000000000000000000000004";
            assert_eq!(names(search(conn, prefix, "", 10)?.0), ["p41", "p42"]);
            assert!(search(conn, "p1\"", "", 10)?.0.is_empty());
            Ok(())
        })
        .unwrap();
    }
}
