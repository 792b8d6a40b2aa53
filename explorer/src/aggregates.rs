//! The aggregates the research API reads instead of scanning every claim: per path and
//! builder, per path, per builder, per pair of builders and per time bucket. They are
//! maintained in the transaction that commits each chunk: every path the chunk touches (a new
//! claim, a claim voided by a revocation, a claim dated late) has its rows recomputed from its
//! own claims, and the other aggregates move by the difference between its old and new state.
//! Claims that count are those not void; only dated claims count in time buckets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::backend::{execute_in, insert_rows, query_in, Backend, DbError, Value};

/// The tables, in the SQL both databases accept.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS path_stats (
    hash_part TEXT PRIMARY KEY,
    store_path TEXT NOT NULL,
    latest BIGINT NOT NULL,
    builders BIGINT NOT NULL,
    hashes BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS unreproduced_by_time ON path_stats (latest, hash_part) WHERE hashes > 1;
CREATE TABLE IF NOT EXISTS path_builders (
    hash_part TEXT NOT NULL,
    builder TEXT NOT NULL,
    hash TEXT NOT NULL,
    hashes BIGINT NOT NULL,
    latest BIGINT NOT NULL,
    unreproduced BIGINT NOT NULL,
    PRIMARY KEY (hash_part, builder)
);
CREATE INDEX IF NOT EXISTS unreproduced_by_builder ON path_builders (builder, latest, hash_part)
    WHERE unreproduced = 1;
CREATE TABLE IF NOT EXISTS builder_stats (
    builder TEXT PRIMARY KEY,
    entries BIGINT NOT NULL,
    paths BIGINT NOT NULL,
    first_logged BIGINT,
    last_logged BIGINT
);
CREATE TABLE IF NOT EXISTS pair_stats (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    common BIGINT NOT NULL,
    agree BIGINT NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE TABLE IF NOT EXISTS totals (
    id BIGINT PRIMARY KEY,
    entries BIGINT NOT NULL,
    paths BIGINT NOT NULL,
    one_builder BIGINT NOT NULL,
    reproduced BIGINT NOT NULL,
    unreproduced BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS buckets (
    seconds BIGINT NOT NULL,
    start BIGINT NOT NULL,
    builder TEXT NOT NULL,
    entries BIGINT NOT NULL,
    compared BIGINT NOT NULL,
    reproduced BIGINT NOT NULL,
    unreproduced BIGINT NOT NULL,
    PRIMARY KEY (seconds, start, builder)
);
";

/// The bucket sizes kept: an hour and a day.
pub const BUCKETS: [u64; 2] = [3600, 86_400];

/// One path's state, as its aggregates hold it.
#[derive(Clone, Debug, Default, PartialEq)]
struct PathState {
    store_path: String,
    /// The latest dated claim's time, -1 when none is dated.
    latest: i64,
    /// Per builder: its smallest NAR hash and how many distinct ones it claimed.
    builders: BTreeMap<String, (String, i64)>,
    /// Distinct NAR hashes over all builders.
    hashes: i64,
}

impl PathState {
    fn compared(&self) -> bool {
        self.builders.len() > 1 || self.hashes > 1
    }
}

/// A claim's part in the per-builder, per-bucket entry counts: +1 when it starts to count,
/// -1 when it stops.
#[derive(Clone, Debug)]
pub struct EntryChange {
    pub builder: String,
    pub logged_at: Option<u64>,
    pub delta: i64,
}

/// The differences a chunk makes, gathered before they are written.
#[derive(Default)]
struct Deltas {
    /// builder → (entries, paths, first logged, last logged)
    builders: HashMap<String, (i64, i64, Option<i64>, Option<i64>)>,
    /// (a, b) → (common, agree)
    pairs: HashMap<(String, String), (i64, i64)>,
    /// (seconds, start, builder or "") → [entries, compared, reproduced, unreproduced]
    buckets: HashMap<(u64, i64, String), [i64; 4]>,
    /// [entries, paths, one builder, reproduced, unreproduced]
    totals: [i64; 5],
}

impl Deltas {
    fn path(&mut self, state: &PathState, sign: i64) {
        let reproduced = i64::from(state.builders.len() > 1 && state.hashes == 1);
        let unreproduced = i64::from(state.hashes > 1);
        self.totals[1] += sign;
        self.totals[2] += sign * (1 - reproduced - unreproduced);
        self.totals[3] += sign * reproduced;
        self.totals[4] += sign * unreproduced;
        let names: Vec<&String> = state.builders.keys().collect();
        for name in &names {
            self.builders.entry((*name).clone()).or_default().1 += sign;
        }
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                let (ha, na) = &state.builders[*a];
                let (hb, nb) = &state.builders[*b];
                let agree = i64::from(*na == 1 && *nb == 1 && ha == hb);
                let pair = self.pairs.entry(((*a).clone(), (*b).clone())).or_default();
                pair.0 += sign;
                pair.1 += sign * agree;
            }
        }
        if state.latest >= 0 && state.compared() {
            for seconds in BUCKETS {
                let start = state.latest / seconds as i64 * seconds as i64;
                for builder in std::iter::once("").chain(names.iter().map(|n| n.as_str())) {
                    let b = self
                        .buckets
                        .entry((seconds, start, builder.to_owned()))
                        .or_default();
                    b[1] += sign;
                    b[2] += sign * reproduced;
                    b[3] += sign * unreproduced;
                }
            }
        }
    }

    fn entry(&mut self, change: &EntryChange) {
        self.totals[0] += change.delta;
        let b = self.builders.entry(change.builder.clone()).or_default();
        b.0 += change.delta;
        if let Some(t) = change.logged_at {
            let t = t as i64;
            if change.delta > 0 {
                b.2 = Some(b.2.map_or(t, |f| f.min(t)));
                b.3 = Some(b.3.map_or(t, |l| l.max(t)));
            }
            for seconds in BUCKETS {
                let start = t / seconds as i64 * seconds as i64;
                for builder in ["", change.builder.as_str()] {
                    self.buckets
                        .entry((seconds, start, builder.to_owned()))
                        .or_default()[0] += change.delta;
                }
            }
        }
    }
}

/// The states the aggregates hold for those of `paths` they hold.
fn old_states(
    conn: &mut dyn Backend,
    paths: &[&str],
) -> Result<HashMap<String, PathState>, DbError> {
    let mut states = HashMap::new();
    for r in query_in(
        conn,
        "SELECT hash_part, store_path, latest, hashes FROM path_stats WHERE hash_part IN ({keys})",
        paths,
    )? {
        states.insert(
            r[0].text()?,
            PathState {
                store_path: r[1].text()?,
                latest: r[2].int()?,
                builders: BTreeMap::new(),
                hashes: r[3].int()?,
            },
        );
    }
    for r in query_in(
        conn,
        "SELECT hash_part, builder, hash, hashes FROM path_builders WHERE hash_part IN ({keys})",
        paths,
    )? {
        if let Some(state) = states.get_mut(&r[0].text()?) {
            state
                .builders
                .insert(r[1].text()?, (r[2].text()?, r[3].int()?));
        }
    }
    Ok(states)
}

/// A claim that counts, as a path's state is made of: store path, builder, NAR hash, time.
pub type CountedClaim = (String, String, String, Option<i64>);

/// The states of `paths` as their claims that count make them, for those with any.
fn new_states(
    conn: &mut dyn Backend,
    paths: &[&str],
) -> Result<HashMap<String, PathState>, DbError> {
    let mut claims: HashMap<String, Vec<CountedClaim>> = HashMap::new();
    for r in query_in(
        conn,
        "SELECT hash_part, store_path, builder, nar_hash, logged_at FROM claims
         WHERE hash_part IN ({keys}) AND void IS NULL",
        paths,
    )? {
        claims.entry(r[0].text()?).or_default().push((
            r[1].text()?,
            r[2].text()?,
            r[3].text()?,
            r[4].opt_int()?,
        ));
    }
    Ok(claims
        .into_iter()
        .filter_map(|(path, claims)| Some((path, state_of(&claims)?)))
        .collect())
}

/// A path's state from all its claims that count.
fn state_of(claims: &[CountedClaim]) -> Option<PathState> {
    let first = claims.first()?;
    let mut state = PathState {
        store_path: first.0.clone(),
        latest: -1,
        ..PathState::default()
    };
    let mut per_builder: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut hashes = BTreeSet::new();
    for (_, builder, hash, logged_at) in claims {
        if let Some(t) = logged_at {
            state.latest = state.latest.max(*t);
        }
        hashes.insert(hash.clone());
        per_builder
            .entry(builder.clone())
            .or_default()
            .insert(hash.clone());
    }
    state.hashes = hashes.len() as i64;
    state.builders = per_builder
        .into_iter()
        .map(|(b, hs)| {
            let n = hs.len() as i64;
            (b, (hs.into_iter().next().unwrap_or_default(), n))
        })
        .collect();
    Some(state)
}

/// Which of `paths` the aggregates hold already.
fn existing(conn: &mut dyn Backend, paths: &[&str]) -> Result<HashSet<String>, DbError> {
    query_in(
        conn,
        "SELECT hash_part FROM path_stats WHERE hash_part IN ({keys})",
        paths,
    )?
    .iter()
    .map(|r| r[0].text())
    .collect()
}

/// The rows a chunk's paths get, gathered to be written with a few multi-row inserts.
#[derive(Default)]
struct PathRows<'a> {
    /// Paths whose builder rows go before the new ones are written.
    replaced: Vec<&'a str>,
    /// Paths no claim counts for any more.
    gone: Vec<&'a str>,
    names: Vec<Vec<Value>>,
    stats: Vec<Vec<Value>>,
    builders: Vec<Vec<Value>>,
}

impl<'a> PathRows<'a> {
    /// Gathers what a path's rows become.
    fn write(&mut self, hash_part: &'a str, old: Option<&PathState>, new: Option<&PathState>) {
        if old.is_some() {
            self.replaced.push(hash_part);
        }
        let Some(new) = new else {
            self.gone.push(hash_part);
            return;
        };
        if old.is_none() {
            let base = new.store_path.rsplit('/').next().unwrap_or_default();
            self.names.push(vec![
                hash_part.into(),
                base.get(33..).unwrap_or_default().into(),
            ]);
        }
        self.stats.push(vec![
            hash_part.into(),
            new.store_path.as_str().into(),
            new.latest.into(),
            (new.builders.len() as i64).into(),
            new.hashes.into(),
        ]);
        // The path's latest time and verdict, copied to each of its builders' rows: the
        // unreproduced paths of one builder are then one index range, newest first.
        for (builder, (hash, n)) in &new.builders {
            self.builders.push(vec![
                hash_part.into(),
                builder.as_str().into(),
                hash.as_str().into(),
                (*n).into(),
                new.latest.into(),
                i64::from(new.hashes > 1).into(),
            ]);
        }
    }

    fn apply(self, conn: &mut dyn Backend) -> Result<(), DbError> {
        execute_in(
            conn,
            "DELETE FROM path_builders WHERE hash_part IN ({keys})",
            &self.replaced,
        )?;
        execute_in(
            conn,
            "DELETE FROM path_stats WHERE hash_part IN ({keys})",
            &self.gone,
        )?;
        insert_rows(
            conn,
            "INSERT INTO path_names (hash_part, name)",
            "",
            self.names,
        )?;
        insert_rows(
            conn,
            "INSERT INTO path_stats (hash_part, store_path, latest, builders, hashes)",
            "ON CONFLICT (hash_part) DO UPDATE SET store_path = excluded.store_path,
               latest = excluded.latest, builders = excluded.builders, hashes = excluded.hashes",
            self.stats,
        )?;
        insert_rows(
            conn,
            "INSERT INTO path_builders (hash_part, builder, hash, hashes, latest, unreproduced)",
            "",
            self.builders,
        )
    }
}

/// Brings the aggregates up to date with the claims, inside the chunk's transaction:
/// `touched` are the hash parts whose claims changed, `entries` the claims that started or
/// stopped counting. `fresh`, when given, holds every claim of the chunk by path, and says
/// that the chunk changed no claim but by adding these: a path the aggregates do not hold
/// yet then has exactly these claims, with no need to read them back (following a log, most
/// paths are new).
pub fn update(
    conn: &mut dyn Backend,
    touched: &BTreeSet<String>,
    entries: &[EntryChange],
    fresh: Option<&BTreeMap<String, Vec<CountedClaim>>>,
) -> Result<(), DbError> {
    let mut deltas = Deltas::default();
    for change in entries {
        deltas.entry(change);
    }
    let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
    // New paths of a chunk that only adds claims are made of the chunk's claims; every other
    // path is read back, old state and new, a few hundred paths a query.
    let held = match fresh {
        Some(_) => existing(conn, &touched)?,
        None => touched.iter().map(|p| (*p).to_owned()).collect(),
    };
    let read: Vec<&str> = touched
        .iter()
        .copied()
        .filter(|p| held.contains(*p))
        .collect();
    let mut olds = old_states(conn, &read)?;
    let mut news = new_states(conn, &read)?;
    let mut rows = PathRows::default();
    for hash_part in touched {
        let (old, new) = if held.contains(hash_part) {
            (olds.remove(hash_part), news.remove(hash_part))
        } else {
            (None, fresh.and_then(|f| state_of(f.get(hash_part)?)))
        };
        if old == new {
            continue;
        }
        if let Some(old) = &old {
            deltas.path(old, -1);
        }
        if let Some(new) = &new {
            deltas.path(new, 1);
        }
        rows.write(hash_part, old.as_ref(), new.as_ref());
    }
    rows.apply(conn)?;
    if deltas.totals != [0; 5] {
        let mut row = vec![Value::Int(1)];
        row.extend(deltas.totals.map(Value::Int));
        insert_rows(
            conn,
            "INSERT INTO totals (id, entries, paths, one_builder, reproduced, unreproduced)",
            "ON CONFLICT (id) DO UPDATE SET entries = totals.entries + excluded.entries,
               paths = totals.paths + excluded.paths,
               one_builder = totals.one_builder + excluded.one_builder,
               reproduced = totals.reproduced + excluded.reproduced,
               unreproduced = totals.unreproduced + excluded.unreproduced",
            vec![row],
        )?;
    }
    let builders = deltas
        .builders
        .into_iter()
        .map(|(builder, (entries, paths, first, last))| {
            vec![
                builder.into(),
                entries.into(),
                paths.into(),
                first.map_or(Value::NullInt, Value::Int),
                last.map_or(Value::NullInt, Value::Int),
            ]
        })
        .collect();
    insert_rows(
        conn,
        "INSERT INTO builder_stats (builder, entries, paths, first_logged, last_logged)",
        "ON CONFLICT (builder) DO UPDATE SET
           entries = builder_stats.entries + excluded.entries,
           paths = builder_stats.paths + excluded.paths,
           first_logged = CASE WHEN builder_stats.first_logged IS NULL
             OR excluded.first_logged < builder_stats.first_logged
             THEN COALESCE(excluded.first_logged, builder_stats.first_logged)
             ELSE builder_stats.first_logged END,
           last_logged = CASE WHEN builder_stats.last_logged IS NULL
             OR excluded.last_logged > builder_stats.last_logged
             THEN COALESCE(excluded.last_logged, builder_stats.last_logged)
             ELSE builder_stats.last_logged END",
        builders,
    )?;
    let pairs = deltas
        .pairs
        .into_iter()
        .map(|((a, b), (common, agree))| vec![a.into(), b.into(), common.into(), agree.into()])
        .collect();
    insert_rows(
        conn,
        "INSERT INTO pair_stats (a, b, common, agree)",
        "ON CONFLICT (a, b) DO UPDATE SET common = pair_stats.common + excluded.common,
           agree = pair_stats.agree + excluded.agree",
        pairs,
    )?;
    let buckets = deltas
        .buckets
        .into_iter()
        .map(|((seconds, start, builder), counts)| {
            let mut row = vec![seconds.into(), start.into(), builder.into()];
            row.extend(counts.map(Value::Int));
            row
        })
        .collect();
    insert_rows(
        conn,
        "INSERT INTO buckets (seconds, start, builder, entries, compared, reproduced,
           unreproduced)",
        "ON CONFLICT (seconds, start, builder) DO UPDATE SET
           entries = buckets.entries + excluded.entries,
           compared = buckets.compared + excluded.compared,
           reproduced = buckets.reproduced + excluded.reproduced,
           unreproduced = buckets.unreproduced + excluded.unreproduced",
        buckets,
    )
}

/// The verdict of each of `hash_parts` that the aggregates hold, with its store path, asked a
/// few hundred at a time: a report over a closure costs a query per few hundred paths.
pub fn verdicts(
    conn: &mut dyn Backend,
    hash_parts: &[&str],
) -> Result<HashMap<String, (String, reprolog_verifier::compare::Verdict)>, DbError> {
    use reprolog_verifier::compare::Verdict;
    let mut found = HashMap::with_capacity(hash_parts.len());
    for r in query_in(
        conn,
        "SELECT hash_part, store_path, builders, hashes FROM path_stats
         WHERE hash_part IN ({keys})",
        hash_parts,
    )? {
        let verdict = match (r[3].int()?, r[2].int()?) {
            (0, _) => Verdict::NotLogged,
            (1, 1) => Verdict::OneBuilder,
            (1, _) => Verdict::Reproduced,
            _ => Verdict::Unreproduced,
        };
        found.insert(r[0].text()?, (r[1].text()?, verdict));
    }
    Ok(found)
}
