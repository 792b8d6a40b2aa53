//! The index: SQLite (a file, WAL mode). It is derived data: everything in it was verified
//! against a log's checkpoints first, and it can be rebuilt from the logs at any time. A
//! follower commits a verified chunk of a log in one transaction, together with the log's new
//! verified size and tree edge, so that after a crash following resumes exactly where the
//! last commit left it: nothing indexed twice, nothing skipped.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reprolog_verifier::dating::rfc3339;
use reprolog_verifier::explorer_api::{Disagreement, IndexedBuilder, PairAgreement};
use reprolog_verifier::locks;
use rusqlite::{params, Connection};

/// Why the index could not answer or store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused, with its reason.
    #[error("index database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The `--db` URL is not one this explorer serves.
    #[error("{0}")]
    Url(String),
}

const SCHEMA: &str = "
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
CREATE INDEX IF NOT EXISTS claims_by_path ON claims (hash_part);
CREATE INDEX IF NOT EXISTS claims_by_name ON claims (name);
CREATE INDEX IF NOT EXISTS claims_by_builder ON claims (builder, logged_at);
CREATE INDEX IF NOT EXISTS claims_by_key ON claims (log, key, idx);
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

/// The index database.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// The file of a `sqlite://PATH` URL.
pub fn sqlite_path(url: &str) -> Result<PathBuf, DbError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(DbError::Url(
            "PostgreSQL is not supported by this version of the explorer yet; use sqlite://PATH"
                .into(),
        ));
    }
    url.strip_prefix("sqlite://")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| DbError::Url(format!("{url}: the database URL must be sqlite://PATH")))
}

fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Db {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Url(format!("creating {}: {e}", dir.display())))?;
        }
        let writer = open(path)?;
        writer.execute_batch(SCHEMA)?;
        Ok(Db {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` on a reader connection (WAL: readers never wait for the follower).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let conn = match locks::lock(&self.readers).pop() {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let result = f(&conn);
        locks::lock(&self.readers).push(conn);
        result
    }

    /// The log's row, created when the explorer first meets the log.
    pub fn log(&self, origin: &str, url: &str) -> Result<LogRow, DbError> {
        let conn = locks::lock(&self.writer);
        conn.execute(
            "INSERT INTO logs (origin, url) VALUES (?1, ?2)
             ON CONFLICT (origin) DO UPDATE SET url = excluded.url",
            params![origin, url],
        )?;
        Ok(conn.query_row(
            "SELECT id, origin, url, size, edge, checkpoint, cosigned_by, stopped, last_error
             FROM logs WHERE origin = ?1",
            params![origin],
            log_row,
        )?)
    }

    /// Every log's row.
    pub fn logs(&self) -> Result<Vec<LogRow>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, origin, url, size, edge, checkpoint, cosigned_by, stopped, last_error
                 FROM logs ORDER BY origin",
            )?;
            let rows = stmt.query_map([], log_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The key events of a log, in index order, as entry text.
    pub fn key_events(&self, log: i64) -> Result<Vec<(u64, String)>, DbError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT idx, entry FROM key_events WHERE log = ?1 ORDER BY idx")?;
            let rows = stmt.query_map(params![log], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The dated checkpoints of a log above `size`.
    pub fn checkpoints_above(&self, log: i64, size: u64) -> Result<Vec<(u64, u64)>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT size, time FROM checkpoints WHERE log = ?1 AND size > ?2 ORDER BY size",
            )?;
            let rows = stmt.query_map(params![log, size as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The largest dated checkpoint size of a log, 0 when none.
    pub fn dated_to(&self, log: i64) -> Result<u64, DbError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE log = ?1",
                params![log],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Commits a verified chunk of log `log`, which must be at `from` still: one transaction,
    /// so that a crash leaves the chunk either wholly in or wholly out.
    pub fn commit(&self, log: i64, from: u64, chunk: &Chunk) -> Result<(), DbError> {
        let mut conn = locks::lock(&self.writer);
        let tx = conn.transaction()?;
        let size: i64 = tx.query_row("SELECT size FROM logs WHERE id = ?1", params![log], |r| {
            r.get(0)
        })?;
        if size as u64 != from {
            return Err(DbError::Url(format!(
                "the index holds log {log} at size {size}, not {from}: another explorer follows it"
            )));
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO claims (log, idx, kind, hash_part, store_path, name, builder, key,
                 key_name, nar_hash, nar_size, refs, deriver, logged_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for c in &chunk.claims {
                insert.execute(params![
                    log,
                    c.index as i64,
                    c.kind,
                    c.hash_part,
                    c.store_path,
                    c.name,
                    c.builder,
                    c.key,
                    c.key_name,
                    c.nar_hash,
                    c.nar_size as i64,
                    c.references.join(" "),
                    c.deriver,
                    c.logged_at.map(|t| t as i64),
                ])?;
            }
            let mut event =
                tx.prepare_cached("INSERT INTO key_events (log, idx, entry) VALUES (?1, ?2, ?3)")?;
            for (index, text) in &chunk.key_events {
                event.execute(params![log, *index as i64, text])?;
            }
            let mut void = tx.prepare_cached(
                "UPDATE claims SET void = ?4 WHERE log = ?1 AND key = ?2 AND idx >= ?3
                 AND void IS NULL",
            )?;
            for (key, from, why) in &chunk.voids {
                void.execute(params![log, key, *from as i64, why])?;
            }
            let mut dated = tx.prepare_cached(
                "INSERT INTO checkpoints (log, size, time) VALUES (?1, ?2, ?3)
                 ON CONFLICT (log, size) DO UPDATE SET time = MIN(time, excluded.time)",
            )?;
            for (size, time) in &chunk.checkpoints {
                dated.execute(params![log, *size as i64, *time as i64])?;
            }
            // Claims indexed before their covering checkpoint was dated get their time now.
            if !chunk.checkpoints.is_empty() {
                tx.execute(
                    "UPDATE claims SET logged_at = (SELECT MIN(time) FROM checkpoints
                       WHERE checkpoints.log = claims.log AND checkpoints.size > claims.idx)
                     WHERE log = ?1 AND logged_at IS NULL
                     AND idx < (SELECT MAX(size) FROM checkpoints WHERE log = ?1)",
                    params![log],
                )?;
            }
        }
        tx.execute(
            "UPDATE logs SET size = ?2, edge = ?3, checkpoint = ?4, cosigned_by = ?5,
             last_error = NULL WHERE id = ?1",
            params![
                log,
                chunk.size as i64,
                chunk.edge,
                chunk.checkpoint,
                chunk.cosigned_by
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that following a log stopped, and why; what was indexed stays.
    pub fn stop(&self, log: i64, why: &str) -> Result<(), DbError> {
        locks::lock(&self.writer).execute(
            "UPDATE logs SET stopped = ?2 WHERE id = ?1",
            params![log, why],
        )?;
        Ok(())
    }

    /// Records what failed last while following (cleared by the next commit).
    pub fn note_error(&self, log: i64, error: &str) -> Result<(), DbError> {
        locks::lock(&self.writer).execute(
            "UPDATE logs SET last_error = ?2 WHERE id = ?1",
            params![log, error],
        )?;
        Ok(())
    }
}

fn log_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        id: r.get(0)?,
        origin: r.get(1)?,
        url: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        edge: r.get(4)?,
        checkpoint: r.get(5)?,
        cosigned_by: r.get(6)?,
        stopped: r.get(7)?,
        last_error: r.get(8)?,
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

/// Every claim about a store path hash part, in (log, index) order.
pub fn claims_of(conn: &Connection, hash_part: &str) -> Result<Vec<ClaimRow>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT logs.origin, idx, kind, store_path, builder, key_name, nar_hash, nar_size, refs,
         deriver, logged_at, void FROM claims JOIN logs ON logs.id = claims.log
         WHERE hash_part = ?1 ORDER BY logs.origin, idx",
    )?;
    let rows = stmt.query_map(params![hash_part], claim_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A claim from a row of `origin, idx, kind, store_path, builder, key_name, nar_hash,
/// nar_size, refs, deriver, logged_at, void`.
fn claim_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimRow> {
    let refs: String = r.get(8)?;
    Ok(ClaimRow {
        log: r.get(0)?,
        index: r.get::<_, i64>(1)? as u64,
        kind: r.get(2)?,
        store_path: r.get(3)?,
        builder: r.get(4)?,
        key_name: r.get(5)?,
        nar_hash: r.get(6)?,
        nar_size: r.get::<_, i64>(7)? as u64,
        references: refs
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        deriver: r.get(9)?,
        logged_at: r.get::<_, Option<i64>>(10)?.map(|t| t as u64),
        void: r.get(11)?,
    })
}

/// Distinct store paths whose name contains `q` or whose hash part starts with it, after
/// `after`, at most `limit`, and whether more follow.
pub fn search(
    conn: &Connection,
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
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT store_path, hash_part FROM claims
         WHERE (name LIKE ?1 ESCAPE '\\' OR hash_part LIKE ?2 ESCAPE '\\') AND store_path > ?3
         ORDER BY store_path LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            format!("%{escaped}%"),
            format!("{escaped}%"),
            after,
            (limit + 1) as i64
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut found: Vec<(String, String)> = rows.collect::<Result<_, _>>()?;
    let more = found.len() > limit;
    found.truncate(limit);
    Ok((found, more))
}

/// Per builder identity: claims that count, distinct paths, first and last logged time.
pub fn builders(conn: &Connection) -> Result<Vec<IndexedBuilder>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT builder, COUNT(*), COUNT(DISTINCT hash_part), MIN(logged_at), MAX(logged_at)
         FROM claims WHERE void IS NULL GROUP BY builder ORDER BY builder",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(IndexedBuilder {
            builder: r.get(0)?,
            entries: r.get::<_, i64>(1)? as u64,
            paths: r.get::<_, i64>(2)? as u64,
            first_logged: r.get::<_, Option<i64>>(3)?.map(|t| rfc3339(t as u64)),
            last_logged: r.get::<_, Option<i64>>(4)?.map(|t| rfc3339(t as u64)),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every pair of builders with a path in common: paths in common, and those they agree on
/// (each claimed one NAR hash, the same).
pub fn agreement(conn: &Connection) -> Result<Vec<PairAgreement>, DbError> {
    let mut stmt = conn.prepare_cached(
        "WITH pb AS (SELECT hash_part, builder, MIN(nar_hash) AS h,
                            COUNT(DISTINCT nar_hash) AS n
                     FROM claims WHERE void IS NULL GROUP BY hash_part, builder)
         SELECT a.builder, b.builder, COUNT(*),
                SUM(CASE WHEN a.n = 1 AND b.n = 1 AND a.h = b.h THEN 1 ELSE 0 END)
         FROM pb a JOIN pb b ON a.hash_part = b.hash_part AND a.builder < b.builder
         GROUP BY a.builder, b.builder ORDER BY a.builder, b.builder",
    )?;
    let rows = stmt.query_map([], |r| {
        let (common, agree) = (r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64);
        Ok(PairAgreement {
            a: r.get(0)?,
            b: r.get(1)?,
            common,
            agree,
            disagree: common - agree,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
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

/// Unreproduced paths, the most recently logged first, and the cursor of the next page.
pub fn disagreements(
    conn: &Connection,
    f: &DisagreementFilter,
) -> Result<(Vec<Disagreement>, Option<String>), DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT hash_part, MAX(store_path), COALESCE(MAX(logged_at), -1) AS t,
                GROUP_CONCAT(DISTINCT builder), GROUP_CONCAT(DISTINCT nar_hash)
         FROM claims WHERE void IS NULL GROUP BY hash_part
         HAVING COUNT(DISTINCT nar_hash) > 1
            AND (?1 IS NULL OR SUM(CASE WHEN builder = ?1 THEN 1 ELSE 0 END) > 0)
            AND (?2 IS NULL OR t >= ?2) AND (?3 IS NULL OR t < ?3)
            AND (?4 IS NULL OR t < ?4 OR (t = ?4 AND hash_part < ?5))
         ORDER BY t DESC, hash_part DESC LIMIT ?6",
    )?;
    let (after_t, after_hash) = match &f.after {
        Some((t, h)) => (Some(*t), h.clone()),
        None => (None, String::new()),
    };
    let split = |s: String| -> Vec<String> {
        let mut v: Vec<String> = s.split(',').map(str::to_owned).collect();
        v.sort();
        v
    };
    let rows = stmt.query_map(
        params![
            f.builder,
            f.since.map(|t| t as i64),
            f.until.map(|t| t as i64),
            after_t,
            after_hash,
            (f.limit + 1) as i64
        ],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        },
    )?;
    let mut rows: Vec<_> = rows.collect::<Result<_, _>>()?;
    let next = (rows.len() > f.limit).then(|| {
        rows.truncate(f.limit);
        rows.last().map(|(h, _, t, _, _)| format!("{t}:{h}"))
    });
    let paths = rows
        .into_iter()
        .map(|(_, store_path, t, builders, hashes)| Disagreement {
            store_path,
            last_logged: u64::try_from(t).ok().map(rfc3339),
            builders: split(builders),
            nar_hashes: split(hashes),
        })
        .collect();
    Ok((paths, next.flatten()))
}

/// Per bucket of `seconds`: claims logged, and the paths whose latest claim falls in it,
/// compared, reproduced and unreproduced; only dated claims; `builder` narrows to its claims
/// and the paths it claimed.
pub fn timeseries(
    conn: &Connection,
    seconds: u64,
    builder: Option<&str>,
) -> Result<Vec<(u64, [u64; 4])>, DbError> {
    let mut buckets = std::collections::BTreeMap::<u64, [u64; 4]>::new();
    let mut entries = conn.prepare_cached(
        "SELECT logged_at / ?1 * ?1 AS s, COUNT(*) FROM claims
         WHERE void IS NULL AND logged_at IS NOT NULL AND (?2 IS NULL OR builder = ?2)
         GROUP BY s",
    )?;
    for row in entries.query_map(params![seconds as i64, builder], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })? {
        let (start, n) = row?;
        buckets.entry(start).or_default()[0] = n;
    }
    let mut paths = conn.prepare_cached(
        "WITH p AS (SELECT MAX(logged_at) AS t, COUNT(DISTINCT builder) AS nb,
                           COUNT(DISTINCT nar_hash) AS nh,
                           SUM(CASE WHEN builder = ?2 THEN 1 ELSE 0 END) AS mine
                    FROM claims WHERE void IS NULL GROUP BY hash_part)
         SELECT t / ?1 * ?1 AS s,
                SUM(CASE WHEN nb > 1 OR nh > 1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN nb > 1 AND nh = 1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN nh > 1 THEN 1 ELSE 0 END)
         FROM p WHERE t IS NOT NULL AND (?2 IS NULL OR mine > 0) GROUP BY s",
    )?;
    for row in paths.query_map(params![seconds as i64, builder], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            [
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ],
        ))
    })? {
        let (start, [compared, reproduced, unreproduced]) = row?;
        let b = buckets.entry(start).or_default();
        (b[1], b[2], b[3]) = (compared, reproduced, unreproduced);
    }
    Ok(buckets.into_iter().collect())
}

/// Calls `each` with every claim logged in `[since, until)` (all when unbounded) by
/// `builder` (any when `None`), in (log, index) order, without holding them all.
pub fn export(
    conn: &Connection,
    builder: Option<&str>,
    since: Option<u64>,
    until: Option<u64>,
    mut each: impl FnMut(ClaimRow) -> bool,
) -> Result<(), DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT logs.origin, idx, kind, store_path, builder, key_name, nar_hash, nar_size, refs,
         deriver, logged_at, void FROM claims JOIN logs ON logs.id = claims.log
         WHERE (?1 IS NULL OR builder = ?1) AND (?2 IS NULL OR logged_at >= ?2)
           AND (?3 IS NULL OR logged_at < ?3)
         ORDER BY logs.origin, idx",
    )?;
    let mut rows = stmt.query(params![
        builder,
        since.map(|t| t as i64),
        until.map(|t| t as i64)
    ])?;
    while let Some(r) = rows.next()? {
        if !each(claim_row(r)?) {
            break;
        }
    }
    Ok(())
}
