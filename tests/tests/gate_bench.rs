//! The gate's benchmark (ignored: run by `scripts/bench-gate.sh` in release; figures in
//! docs/benchmarks.md). It prints, each with a reference measured in the same run:
//! - narinfo answers per second with a warm decision cache, and their p50/p99 latency, against
//!   the same narinfo files served by a plain keep-alive HTTP server;
//! - p50/p99 latency of a cold narinfo (lookup and two inclusion proofs fetched and verified);
//! - NAR streaming throughput through the gate from a `file://` and an `http://` upstream,
//!   against reading the upstream directly, and the gate's RSS while streaming 1 GiB.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reprolog_tests::{submit, synthetic_narinfo, write_builders, Server, Service};
use reprolog_verifier::nix::{NarInfo, NixSecretKey};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A plain static file server with keep-alive, a thread per connection, files sent with
/// `io::copy` (sendfile on Linux): the reference an upstream cache would be.
fn static_server(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).map_or(true, |n| n == 0) {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                            break;
                        }
                    }
                    let name = line
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/');
                    let file = (!name.contains("..")).then(|| std::fs::File::open(root.join(name)));
                    match file {
                        Some(Ok(mut f)) => {
                            let len = f.metadata().unwrap().len();
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                            if len < 1 << 16 {
                                // Small files in one write, as a real server sends them.
                                let mut all = head.into_bytes();
                                let _ = f.read_to_end(&mut all);
                                if conn.write_all(&all).is_err() {
                                    return;
                                }
                            } else if conn.write_all(head.as_bytes()).is_err()
                                || std::io::copy(&mut f, &mut conn).is_err()
                            {
                                return;
                            }
                        }
                        _ => {
                            let _ =
                                write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        }
                    }
                }
            });
        }
    });
    url
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!(
        "p50 {:.3} ms, p99 {:.3} ms ({} requests)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len()
    )
}

/// Closed-loop load: `threads` clients with keep-alive GET `urls` round-robin for `secs`.
/// Returns requests/s and every latency; every answer must be 200.
fn load(urls: Arc<Vec<String>>, threads: usize, secs: u64) -> (f64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (urls, stop, done) = (Arc::clone(&urls), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let mut latencies = Vec::new();
                let mut i = t * 7919;
                while !stop.load(Relaxed) {
                    let url = &urls[i % urls.len()];
                    i += 1;
                    let t0 = Instant::now();
                    let r = agent.get(url).call().expect("200");
                    let _ = r.into_string().unwrap();
                    latencies.push(t0.elapsed());
                    done.fetch_add(1, Relaxed);
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Relaxed);
    let latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    (
        done.load(Relaxed) as f64 / start.elapsed().as_secs_f64(),
        latencies,
    )
}

/// curl's download speed in MiB/s.
fn curl_speed(url: &str) -> f64 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download} %{size_download}",
            url,
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    let speed: f64 = words.next().unwrap().parse().unwrap();
    let size: u64 = words.next().unwrap().parse().unwrap();
    assert_eq!(size, 1 << 30, "{url}: the whole NAR");
    speed / (1 << 20) as f64
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// User plus system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |s| s.1);
    let mut fields = after_name.split_whitespace().skip(11);
    let mut tick = || {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick() + tick()) as f64 / 100.0
}

/// curl through the gate while sampling its RSS: (MiB/s, max RSS in MiB, the gate's CPU
/// seconds for the 1 GiB).
fn stream_through(gate: &Service, url: &str) -> (f64, f64, f64) {
    let pid = gate.pid();
    let cpu_before = cpu_seconds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max) = (Arc::clone(&stop), Arc::clone(&max));
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                max.fetch_max(rss_kib(pid), Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let speed = curl_speed(url);
    let cpu = cpu_seconds(pid) - cpu_before;
    stop.store(true, Relaxed);
    sampler.join().unwrap();
    (speed, max.load(Relaxed) as f64 / 1024.0, cpu)
}

#[test]
#[ignore = "a benchmark: scripts/bench-gate.sh runs it in release"]
fn gate_benchmark() {
    let paths = env("PATHS", 2000);
    let warm_secs = env("SECONDS", 5);
    let threads = env("THREADS", 4) as usize;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A log with two builders that signed the same `paths` synthetic narinfos.
    let (b1, b2) = (
        NixSecretKey::generate("builder-1"),
        NixSecretKey::generate("builder-2"),
    );
    let log_dir = d.join("log");
    write_builders(
        &log_dir,
        &[b1.public_key().to_string(), b2.public_key().to_string()],
    );
    let server = Server::start(&log_dir, &["--checkpoint-interval-ms", "50"]);
    let upstream = d.join("upstream");
    std::fs::create_dir_all(upstream.join("nar")).unwrap();
    let mut hashes = Vec::new();
    for chunk in (0..paths).collect::<Vec<_>>().chunks(500) {
        let mut body = String::new();
        for &i in chunk {
            for key in [&b1, &b2] {
                body += &synthetic_narinfo(key, "bench", i, 0);
                body += "\n";
            }
            let text = synthetic_narinfo(&b1, "bench", i, 0);
            let info = NarInfo::parse(&text).unwrap();
            let hash = info.store_path.hash_part().to_owned();
            std::fs::write(upstream.join(format!("{hash}.narinfo")), &text).unwrap();
            hashes.push(hash);
        }
        let (status, answer) = submit(&server, &body);
        assert_eq!(status, 200, "{answer}");
    }
    server.wait_for_checkpoint(2 * paths);

    // A 1 GiB "NAR" (streaming need not parse it).
    {
        let mut f = std::fs::File::create(upstream.join("nar/big.nar")).unwrap();
        let block = vec![0x5a_u8; 1 << 20];
        for _ in 0..1024 {
            f.write_all(&block).unwrap();
        }
    }
    let http_upstream = static_server(upstream.clone());

    let policy = d.join("policy");
    std::fs::write(
        &policy,
        format!("log {}\nquorum none\n", server.verifier_key()),
    )
    .unwrap();
    let trust = d.join("trust");
    std::fs::write(
        &trust,
        format!(
            "builder one {}\nbuilder two {}\nquorum 2\n",
            b1.public_key(),
            b2.public_key()
        ),
    )
    .unwrap();
    let gate = Service::try_start(
        "reprolog-gate",
        &d.join("gate"),
        &[
            "--log",
            &server.url,
            "--log-policy",
            policy.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
            "--upstream",
            &format!("file://{}", upstream.display()),
            "--upstream",
            &http_upstream,
        ],
    )
    .unwrap_or_else(|e| panic!("the gate did not start: {e}"));
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        machine.split(':').nth(1).unwrap_or("").trim()
    );
    println!(
        "log: {} entries; {paths} paths, each signed by both builders",
        2 * paths
    );

    // Cold: each path once, one at a time (a lookup and two proofs each).
    let agent = ureq::AgentBuilder::new().build();
    let mut cold = Vec::new();
    for h in &hashes {
        let t0 = Instant::now();
        let r = agent
            .get(&format!("{}/{h}.narinfo", gate.url))
            .call()
            .expect("allowed");
        let _ = r.into_string().unwrap();
        cold.push(t0.elapsed());
    }
    println!("narinfo, cold (lookup + 2 proofs): {}", summary(cold));
    let proofs = gate.metric("reprolog_gate_proofs_total").unwrap_or(0.0);
    println!("  proofs fetched: {proofs}");

    // Warm: the decisions are cached; the reference serves the same files.
    let urls = |base: &str| {
        Arc::new(
            hashes
                .iter()
                .map(|h| format!("{base}/{h}.narinfo"))
                .collect::<Vec<_>>(),
        )
    };
    let (rate, latencies) = load(urls(&gate.url), threads, warm_secs);
    println!(
        "narinfo, warm, {threads} clients: {rate:.0}/s, {}",
        summary(latencies)
    );
    let (rate, latencies) = load(urls(&http_upstream), threads, warm_secs);
    println!(
        "  reference, the upstream's files over plain HTTP, {threads} clients: {rate:.0}/s, {}",
        summary(latencies)
    );
    let (rate, latencies) = load(
        Arc::new(vec![format!("{}/nix-cache-info", gate.url)]),
        threads,
        warm_secs,
    );
    println!(
        "  reference, the gate's /nix-cache-info (its HTTP floor), {threads} clients: {rate:.0}/s, {}",
        summary(latencies)
    );
    let misses = gate
        .metric("reprolog_gate_decision_cache_misses_total")
        .unwrap_or(0.0);
    println!("  decisions made in all: {misses} (the warm runs made none)");

    // NAR streaming: 1 GiB, from the page cache.
    let file_url = format!("file://{}", upstream.join("nar/big.nar").display());
    curl_speed(&file_url); // warms the page cache
    let idle = rss_kib(gate.pid()) as f64 / 1024.0;
    let runs = env("RUNS", 3) as usize;
    // Each figure is the median of `runs`; the RSS is the largest seen in any.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let through = |url: String| {
        let all: Vec<(f64, f64, f64)> = (0..runs).map(|_| stream_through(&gate, &url)).collect();
        (
            median(all.iter().map(|r| r.0).collect()),
            all.iter().map(|r| r.1).fold(0.0, f64::max),
            median(all.iter().map(|r| r.2).collect()),
        )
    };
    let direct = |url: String| median((0..runs).map(|_| curl_speed(&url)).collect());
    let direct_file = direct(file_url);
    let (through_file, rss_file, cpu_file) = through(format!("{}/nar/0/nar/big.nar", gate.url));
    let direct_http = direct(format!("{http_upstream}/nar/big.nar"));
    let (through_http, rss_http, cpu_http) = through(format!("{}/nar/1/nar/big.nar", gate.url));
    println!("gate RSS before streaming: {idle:.1} MiB");
    println!(
        "NAR 1 GiB from file://: {through_file:.0} MiB/s through the gate, {direct_file:.0} MiB/s \
         read directly ({:.0}%); gate RSS at most {rss_file:.1} MiB; gate CPU {cpu_file:.2} s",
        100.0 * through_file / direct_file
    );
    println!(
        "NAR 1 GiB from http://: {through_http:.0} MiB/s through the gate, {direct_http:.0} MiB/s \
         read directly ({:.0}%); gate RSS at most {rss_http:.1} MiB; gate CPU {cpu_http:.2} s",
        100.0 * through_http / direct_http
    );
}
