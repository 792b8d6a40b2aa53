//! `reprolog ingest`: put an existing binary cache into the log.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::{ClientError, LogClient};
use anyhow::{bail, Context, Result};
use reprolog_verifier::api::{ErrorAnswer, SignatureStatus, SubmitAnswer};
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::text::printable;

use crate::common::{read_limited, MAX_NARINFO_BYTES};

/// Narinfos per submission: at 64 a request the server spends about 10 µs more CPU an entry
/// than at 256 (docs/benchmarks.md).
const BATCH: usize = 256;

pub struct IngestArgs {
    pub log: String,
    pub sources: Vec<String>,
    pub paths: Option<PathBuf>,
    pub state: PathBuf,
}

/// Where narinfos come from.
enum Source {
    /// A `file://` cache directory: every `*.narinfo` in it.
    Dir(PathBuf),
    /// An HTTP(S) cache and the hash parts to fetch from it.
    Http {
        base: String,
        hash_parts: Vec<String>,
    },
}

impl Source {
    fn items(&self) -> Result<Vec<String>> {
        match self {
            Source::Dir(dir) => {
                let mut names: Vec<String> = std::fs::read_dir(dir)
                    .with_context(|| format!("listing {}", dir.display()))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".narinfo"))
                    .collect();
                names.sort();
                Ok(names)
            }
            Source::Http { hash_parts, .. } => Ok(hash_parts.clone()),
        }
    }

    fn fetch(&self, item: &str, agent: &ureq::Agent) -> Result<String> {
        let bytes = match self {
            Source::Dir(dir) => read_limited(&dir.join(item), MAX_NARINFO_BYTES)?,
            Source::Http { base, .. } => {
                let url = format!("{base}/{item}.narinfo");
                let r = agent.get(&url).call().with_context(|| url.clone())?;
                let mut body = Vec::new();
                r.into_reader()
                    .take(MAX_NARINFO_BYTES + 1)
                    .read_to_end(&mut body)?;
                if body.len() as u64 > MAX_NARINFO_BYTES {
                    bail!("{url}: too large for a narinfo");
                }
                body
            }
        };
        String::from_utf8(bytes).with_context(|| format!("{item} is not UTF-8"))
    }
}

/// Hash parts from a file of store paths or hash parts, one a line.
fn read_hash_parts(file: &Path) -> Result<Vec<String>> {
    let text = String::from_utf8(read_limited(file, 256 << 20)?)?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let base = l.rsplit('/').next().unwrap_or(l);
            match base.get(..32) {
                Some(h)
                    if h.bytes()
                        .all(|b| reprolog_verifier::nix::nix32::ALPHABET.contains(&b)) =>
                {
                    Ok(h.to_owned())
                }
                _ => bail!("{}: {l:?} is not a store path", file.display()),
            }
        })
        .collect()
}

#[derive(Default)]
struct Counts {
    logged: u64,
    duplicate: u64,
    ignored: u64,
    failed: u64,
}

/// Resume points: how many items of each source were done, by source.
fn load_state(path: &Path) -> BTreeMap<String, usize> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<BTreeMap<String, usize>>(&t).ok())
        .unwrap_or_default()
}

fn save_state(path: &Path, state: &BTreeMap<String, usize>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

struct Progress {
    tty: bool,
    start: Instant,
    last: Instant,
    total: usize,
}

impl Progress {
    fn show(&mut self, done: usize, force: bool) {
        if !self.tty || (!force && self.last.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let eta = (self.total.saturating_sub(done)) as f64 / rate.max(1e-3);
        let filled = (30 * done).checked_div(self.total).unwrap_or(30);
        eprint!(
            "\r[{}{}] {done}/{} narinfos  {rate:.0}/s  ETA {eta:.0}s ",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            self.total
        );
        let _ = std::io::stderr().flush();
    }
}

/// Records what the log said of each signature of a batch.
fn tally(answer: &SubmitAnswer, counts: &mut Counts) {
    for sig in answer.narinfos.iter().flat_map(|n| &n.signatures) {
        match sig.status {
            SignatureStatus::Logged => counts.logged += 1,
            SignatureStatus::Duplicate => counts.duplicate += 1,
            SignatureStatus::Ignored => counts.ignored += 1,
        }
    }
}

/// Submits a batch; a refused batch is split to find the narinfo at fault.
fn submit(client: &LogClient, batch: &[(String, String)], counts: &mut Counts) {
    let body: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
    match client.submit_narinfos(&body.join("\n")) {
        Ok(answer) => tally(&answer, counts),
        // No signature of the batch could be logged: each is counted as ignored.
        Err(ClientError::Status {
            status: 422, body, ..
        }) if body.contains("no valid signature") => {
            counts.ignored += serde_json::from_str::<ErrorAnswer>(&body)
                .ok()
                .and_then(|a| a.signatures)
                .unwrap_or(batch.len() as u64);
        }
        // A malformed narinfo refuses the whole batch: find it by sending them one by one.
        Err(_) if batch.len() > 1 => {
            for one in batch {
                submit(client, std::slice::from_ref(one), counts);
            }
        }
        Err(e) => {
            eprintln!("\nfailed: {}: {}", batch[0].0, printable(&e.to_string()));
            counts.failed += 1;
        }
    }
}

pub fn run(args: IngestArgs) -> Result<bool> {
    let client = LogClient::new(&args.log);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut sources = Vec::new();
    for s in &args.sources {
        let source = if let Some(dir) = s.strip_prefix("file://") {
            Source::Dir(PathBuf::from(dir.split('?').next().unwrap_or(dir)))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            let file = args
                .paths
                .as_ref()
                .context("an HTTP cache cannot be listed: give --paths FILE")?;
            Source::Http {
                base: s.trim_end_matches('/').to_owned(),
                hash_parts: read_hash_parts(file)?,
            }
        } else {
            bail!("{s}: a source is a file:// directory or an http(s):// cache");
        };
        sources.push((s.clone(), source));
    }
    let mut state = load_state(&args.state);
    let mut counts = Counts::default();
    for (name, source) in &sources {
        let items = source.items()?;
        let resume = state.get(name).copied().unwrap_or(0).min(items.len());
        if resume > 0 {
            eprintln!(
                "{name}: resuming after {resume} of {} narinfos",
                items.len()
            );
        }
        let mut progress = Progress {
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: Instant::now(),
            total: items.len(),
        };
        let mut done = resume;
        for chunk in items[resume..].chunks(BATCH) {
            let mut batch = Vec::new();
            for item in chunk {
                match source.fetch(item, &agent).and_then(|t| {
                    NarInfo::parse(&t).with_context(|| item.clone())?;
                    Ok(t)
                }) {
                    Ok(text) => batch.push((item.clone(), text)),
                    Err(e) => {
                        eprintln!("\nfailed: {}", printable(&format!("{e:#}")));
                        counts.failed += 1;
                    }
                }
            }
            if !batch.is_empty() {
                submit(&client, &batch, &mut counts);
            }
            done += chunk.len();
            state.insert(name.clone(), done);
            save_state(&args.state, &state)?;
            progress.show(done, false);
        }
        progress.show(done, true);
        if progress.tty {
            eprintln!();
        }
        // Finished: a later run starts over (the log drops what it already has).
        state.remove(name);
        save_state(&args.state, &state)?;
    }
    println!(
        "logged {}, duplicate {}, ignored {}, failed {}",
        counts.logged, counts.duplicate, counts.ignored, counts.failed
    );
    Ok(counts.failed == 0)
}
