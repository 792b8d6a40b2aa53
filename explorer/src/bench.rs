//! `reprolog-explorer bench`: fills an index with synthetic claims through the same commit
//! (and aggregates) the follower uses, then times each query the API makes, in process:
//! the server's share of an answer, at a size a real log would take hours to reach. Not a
//! user's command; `scripts/bench-explorer.sh` measures the follower on a real log.

use std::time::Instant;

use crate::backend::DbError;
use crate::db::{self, Chunk, Db, DisagreementFilter, NewClaim};

/// Claims per committed chunk, as the follower commits them.
const CHUNK: u64 = 4096;

/// A synthetic claim: `paths` paths claimed in turn by `builders` builders; every 20th path
/// has builder 0 disagree; times an hour apart per 1,000 claims.
fn claim(index: u64, paths: u64, builders: u64) -> NewClaim {
    let path = index % paths;
    let builder = index / paths % builders;
    let hash_part = format!("{path:0>32}");
    let hash = u64::from(builder == 0 && path.is_multiple_of(20));
    NewClaim {
        index,
        kind: "cache-signature",
        store_path: format!("/nix/store/{hash_part}-package-{path}"),
        name: format!("package-{path}"),
        hash_part,
        builder: format!("builder-{builder}"),
        key: format!("builder-{builder}:key"),
        key_name: format!("builder-{builder}"),
        nar_hash: format!("sha256:{hash:052}"),
        nar_size: 1000,
        references: Vec::new(),
        deriver: None,
        logged_at: Some(1_700_000_000 + index / 1000 * 3600),
    }
}

fn percentiles(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.99))
}

pub fn run(db: &Db, claims: u64, builders: u64, queries: usize) -> Result<(), DbError> {
    let paths = (claims / builders).max(1);
    let log = db.log("bench.example/log", "http://127.0.0.1:1")?;
    let start = Instant::now();
    let mut size = log.size;
    while size < claims {
        let end = (size + CHUNK).min(claims);
        let chunk = Chunk {
            claims: (size..end).map(|i| claim(i, paths, builders)).collect(),
            size: end,
            ..Chunk::default()
        };
        db.commit(log.id, size, &chunk)?;
        size = end;
    }
    let filled = start.elapsed().as_secs_f64();
    println!(
        "filled {claims} claims ({paths} paths, {builders} builders) in {filled:.1} s: {:.0} µs per claim",
        filled * 1e6 / claims.max(1) as f64
    );
    let time = |name: &str, f: &mut dyn FnMut(usize) -> Result<(), DbError>| {
        let mut times = Vec::with_capacity(queries);
        for i in 0..queries {
            let t = Instant::now();
            f(i)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p99) = percentiles(times);
        println!("{name:<14} p50 {p50:.2} ms, p99 {p99:.2} ms ({queries} queries)");
        Ok::<(), DbError>(())
    };
    let hash = |i: usize| claim(i as u64 * 7919 % paths, paths, builders).hash_part;
    time("paths", &mut |i| {
        db.read(|c| db::claims_of(c, &hash(i)).map(drop))
    })?;
    time("search", &mut |i| {
        db.read(|c| db::search(c, &format!("package-{}", i * 31 % 1000), "", 20).map(drop))
    })?;
    time("builders", &mut |_| db.read(|c| db::builders(c).map(drop)))?;
    time("agreement", &mut |_| {
        db.read(|c| db::agreement(c).map(drop))
    })?;
    time("disagreements", &mut |i| {
        let filter = DisagreementFilter {
            builder: (i % 2 == 1).then(|| "builder-1".to_owned()),
            since: None,
            until: None,
            after: None,
            limit: 50,
        };
        db.read(|c| db::disagreements(c, &filter).map(drop))
    })?;
    time("timeseries", &mut |i| {
        let builder = (i % 2 == 1).then_some("builder-1");
        db.read(|c| db::timeseries(c, 3600, builder).map(drop))
    })?;
    let report: Vec<String> = (0..10_000).map(hash).collect();
    let t = Instant::now();
    db.read(|c| {
        let hashes: Vec<&str> = report.iter().map(String::as_str).collect();
        crate::aggregates::verdicts(c, &hashes).map(drop)
    })?;
    println!(
        "report of 10,000 paths: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
