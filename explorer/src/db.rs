//! The index, in SQLite (a file, WAL mode) or PostgreSQL ([`crate::backend`]). It is derived
//! data: everything in it was verified against a log's checkpoints first, and it can be
//! rebuilt from the logs at any time. A follower commits a verified chunk of a log in one
//! transaction, together with the log's new verified size and tree edge, and only if the log
//! is still at the size the chunk starts from: after a crash following resumes exactly where
//! the last commit left it, and two explorers sharing a database never index an entry twice.

use std::path::PathBuf;
use std::sync::Mutex;

use reprolog_verifier::dating::rfc3339;
use reprolog_verifier::explorer_api::{IndexedBuilder, PairAgreement};
use reprolog_verifier::locks;

pub use crate::backend::DbError;
use crate::backend::{Backend, Value};

const SQLITE_SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
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
";

/// The indexes both databases get.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS claims_by_path ON claims (hash_part);
CREATE INDEX IF NOT EXISTS claims_by_name ON claims (name);
CREATE INDEX IF NOT EXISTS claims_by_builder ON claims (builder, logged_at);
CREATE INDEX IF NOT EXISTS claims_by_key ON claims (log, key, idx);
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
                Ok(Box::new(conn))
            }
            Location::Postgres(url) => {
                Ok(Box::new(postgres::Client::connect(url, postgres::NoTls)?))
            }
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
    for c in &chunk.claims {
        conn.execute(
            "INSERT INTO claims (log, idx, kind, hash_part, store_path, name, builder, key,
             key_name, nar_hash, nar_size, refs, deriver, logged_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
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
            ],
        )?;
    }
    for (index, text) in &chunk.key_events {
        conn.execute(
            "INSERT INTO key_events (log, idx, entry) VALUES ($1, $2, $3)",
            &[log.into(), (*index).into(), text.as_str().into()],
        )?;
    }
    for (key, void_from, why) in &chunk.voids {
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
    if !chunk.checkpoints.is_empty() {
        conn.execute(
            "UPDATE claims SET logged_at = (SELECT MIN(time) FROM checkpoints
               WHERE checkpoints.log = claims.log AND checkpoints.size > claims.idx)
             WHERE log = $1 AND logged_at IS NULL
             AND idx < (SELECT MAX(size) FROM checkpoints WHERE log = $1)",
            &[log.into()],
        )?;
    }
    Ok(())
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

/// Distinct store paths whose name contains `q` or whose hash part starts with it, after
/// `after`, at most `limit`, and whether more follow.
pub fn search(
    conn: &mut dyn Backend,
    q: &str,
    after: &str,
    limit: usize,
) -> Result<(Vec<(String, String)>, bool), DbError> {
    let escaped: String = q
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let rows = conn.query(
        "SELECT DISTINCT store_path, hash_part FROM claims
         WHERE (name LIKE $1 ESCAPE '\\' OR hash_part LIKE $2 ESCAPE '\\') AND store_path > $3
         ORDER BY store_path LIMIT $4",
        &[
            format!("%{escaped}%").into(),
            format!("{escaped}%").into(),
            after.into(),
            ((limit + 1) as u64).into(),
        ],
    )?;
    let mut found: Vec<(String, String)> = rows
        .iter()
        .map(|r| Ok((r[0].text()?, r[1].text()?)))
        .collect::<Result<_, DbError>>()?;
    let more = found.len() > limit;
    found.truncate(limit);
    Ok((found, more))
}

/// Per builder identity: claims that count, distinct paths, first and last logged time.
pub fn builders(conn: &mut dyn Backend) -> Result<Vec<IndexedBuilder>, DbError> {
    conn.query(
        "SELECT builder, COUNT(*), COUNT(DISTINCT hash_part), MIN(logged_at), MAX(logged_at)
         FROM claims WHERE void IS NULL GROUP BY builder ORDER BY builder",
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

/// Every pair of builders with a path in common: paths in common, and those they agree on
/// (each claimed one NAR hash, the same).
pub fn agreement(conn: &mut dyn Backend) -> Result<Vec<PairAgreement>, DbError> {
    conn.query(
        "WITH pb AS (SELECT hash_part, builder, MIN(nar_hash) AS h,
                            COUNT(DISTINCT nar_hash) AS n
                     FROM claims WHERE void IS NULL GROUP BY hash_part, builder)
         SELECT a.builder, b.builder, COUNT(*),
                SUM(CASE WHEN a.n = 1 AND b.n = 1 AND a.h = b.h THEN 1 ELSE 0 END)
         FROM pb a JOIN pb b ON a.hash_part = b.hash_part AND a.builder < b.builder
         GROUP BY a.builder, b.builder ORDER BY a.builder, b.builder",
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

/// Unreproduced paths, the most recently logged first, and the cursor of the next page.
pub fn disagreements(
    conn: &mut dyn Backend,
    f: &DisagreementFilter,
) -> Result<(Vec<Unreproduced>, Option<String>), DbError> {
    let (after_t, after_hash) = match &f.after {
        Some((t, h)) => (Value::Int(*t), Value::Text(h.clone())),
        None => (Value::NullInt, Value::NullText),
    };
    let latest = "COALESCE(MAX(logged_at), -1)";
    let rows = conn.query(
        &format!(
            "SELECT hash_part, {latest} FROM claims WHERE void IS NULL GROUP BY hash_part
             HAVING COUNT(DISTINCT nar_hash) > 1
                AND (CAST($1 AS TEXT) IS NULL
                     OR SUM(CASE WHEN builder = $1 THEN 1 ELSE 0 END) > 0)
                AND (CAST($2 AS BIGINT) IS NULL OR {latest} >= $2)
                AND (CAST($3 AS BIGINT) IS NULL OR {latest} < $3)
                AND (CAST($4 AS BIGINT) IS NULL OR {latest} < $4
                     OR ({latest} = $4 AND hash_part < $5))
             ORDER BY {latest} DESC, hash_part DESC LIMIT $6"
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

/// Per bucket of `seconds`: claims logged, and the paths whose latest claim falls in it,
/// compared, reproduced and unreproduced; only dated claims; `builder` narrows to its claims
/// and the paths it claimed.
pub fn timeseries(
    conn: &mut dyn Backend,
    seconds: u64,
    builder: Option<&str>,
) -> Result<Vec<(u64, [u64; 4])>, DbError> {
    let mut buckets = std::collections::BTreeMap::<u64, [u64; 4]>::new();
    let params = [seconds.into(), builder.into()];
    for r in conn.query(
        "SELECT logged_at / $1 * $1 AS s, COUNT(*) FROM claims
         WHERE void IS NULL AND logged_at IS NOT NULL
           AND (CAST($2 AS TEXT) IS NULL OR builder = $2)
         GROUP BY logged_at / $1 * $1",
        &params,
    )? {
        buckets.entry(r[0].int()? as u64).or_default()[0] = r[1].int()? as u64;
    }
    for r in conn.query(
        "WITH p AS (SELECT MAX(logged_at) AS t, COUNT(DISTINCT builder) AS nb,
                           COUNT(DISTINCT nar_hash) AS nh,
                           SUM(CASE WHEN builder = $2 THEN 1 ELSE 0 END) AS mine
                    FROM claims WHERE void IS NULL GROUP BY hash_part)
         SELECT t / $1 * $1 AS s,
                SUM(CASE WHEN nb > 1 OR nh > 1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN nb > 1 AND nh = 1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN nh > 1 THEN 1 ELSE 0 END)
         FROM p WHERE t IS NOT NULL AND (CAST($2 AS TEXT) IS NULL OR mine > 0)
         GROUP BY t / $1 * $1",
        &params,
    )? {
        let b = buckets.entry(r[0].int()? as u64).or_default();
        (b[1], b[2], b[3]) = (r[1].int()? as u64, r[2].int()? as u64, r[3].int()? as u64);
    }
    Ok(buckets.into_iter().collect())
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
