//! `reprolog ingest`: put an existing binary cache into the log.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{ureq_message, ClientError, LogClient};
use anyhow::{bail, Context, Result};
use reprolog_verifier::api::{ErrorAnswer, RefusalReason, SignatureStatus, SubmitAnswer};
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::text::printable;

use serde::Serialize;

use crate::common::{read_limited, state_file, Progress, MAX_NARINFO_BYTES};

/// Narinfos per submission: at 64 a request the server spends about 10 µs more CPU an entry
/// than at 256 (docs/benchmarks.md).
const BATCH: usize = 256;

pub struct IngestArgs {
    pub log: String,
    pub sources: Vec<String>,
    pub paths: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub json: bool,
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
                let r = agent
                    .get(&url)
                    .call()
                    .map_err(|e| anyhow::anyhow!("{url}: {}", ureq_message(&e)))?;
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

/// What an ingest run did, as `--json` prints it.
#[derive(Default, Serialize)]
pub struct IngestReport {
    /// Signatures appended to the log.
    pub logged: u64,
    /// Signatures the log already had.
    pub duplicate: u64,
    /// Signatures the log did not take (unregistered key, invalid signature, none at all).
    pub ignored: u64,
    /// Narinfos that could not be read, parsed or submitted.
    pub failed: u64,
    /// Each ignored signature and why.
    pub ignored_signatures: Vec<RefusalReason>,
    /// What each failure was.
    pub failures: Vec<String>,
}

impl IngestReport {
    fn fail(&mut self, what: String) {
        eprintln!("failed: {}", printable(&what));
        self.failed += 1;
        self.failures.push(printable(&what).into_owned());
    }

    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!(
            "logged {}, duplicate {}, ignored {}, failed {}",
            self.logged, self.duplicate, self.ignored, self.failed
        );
        let mut by_reason: BTreeMap<&str, Vec<&RefusalReason>> = BTreeMap::new();
        for r in &self.ignored_signatures {
            by_reason.entry(&r.reason).or_default().push(r);
        }
        for (reason, sigs) in by_reason {
            println!("  ignored {}: {}", sigs.len(), printable(reason));
            for r in sigs.iter().take(3) {
                println!("    {}", printable(&r.store_path));
            }
            if sigs.len() > 3 {
                println!("    … and {} more (--json lists all)", sigs.len() - 3);
            }
        }
        Ok(())
    }
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

/// Records what the log said of each signature of a batch.
fn tally(answer: &SubmitAnswer, report: &mut IngestReport) {
    for narinfo in &answer.narinfos {
        for sig in &narinfo.signatures {
            match sig.status {
                SignatureStatus::Logged => report.logged += 1,
                SignatureStatus::Duplicate => report.duplicate += 1,
                SignatureStatus::Ignored => {
                    report.ignored += 1;
                    report.ignored_signatures.push(RefusalReason {
                        store_path: narinfo.store_path.clone(),
                        key: sig.key.clone(),
                        reason: sig.reason.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
}

/// How often a log that cannot be reached is tried before the run stops.
const TRIES: u32 = 3;

/// Submits a batch, retrying a log that cannot be reached a few times. A refused batch is
/// split to find the narinfo at fault, or to learn every ignored signature's reason (a 422
/// lists only the first few). Returns an error only when the log cannot be reached: there is
/// no point going on.
fn submit(client: &LogClient, batch: &[(String, String)], report: &mut IngestReport) -> Result<()> {
    let body: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
    let body = body.join("\n");
    let mut tries = 0;
    let result = loop {
        tries += 1;
        match client.submit_narinfos(&body) {
            Err(e) if e.is_unreachable() && tries < TRIES => {
                std::thread::sleep(Duration::from_millis(500 << tries));
            }
            other => break other,
        }
    };
    match result {
        Ok(answer) => tally(&answer, report),
        Err(e) if e.is_unreachable() => {
            bail!("{e} (tried {TRIES} times); run again to resume")
        }
        Err(ClientError::Status {
            status: 422, body, ..
        }) if body.contains("no valid signature") => {
            let answer = serde_json::from_str::<ErrorAnswer>(&body).ok();
            let listed = answer.as_ref().map_or(0, |a| a.first_reasons.len() as u64);
            match answer.filter(|a| a.signatures == Some(listed)) {
                Some(a) => {
                    report.ignored += listed;
                    report.ignored_signatures.extend(a.first_reasons);
                }
                None if batch.len() > 1 => {
                    let (left, right) = batch.split_at(batch.len() / 2);
                    submit(client, left, report)?;
                    submit(client, right, report)?;
                }
                None => report.fail(format!("{}: {body}", batch[0].0)),
            }
        }
        // A malformed narinfo refuses the whole batch: find it by sending them one by one.
        Err(_) if batch.len() > 1 => {
            for one in batch {
                submit(client, std::slice::from_ref(one), report)?;
            }
        }
        Err(e) => report.fail(format!("{}: {e}", batch[0].0)),
    }
    Ok(())
}

pub fn run(args: IngestArgs) -> Result<bool> {
    let client = LogClient::new(&args.log)?;
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
    let state_path = state_file(args.state.clone(), "ingest.state")?;
    let mut state = load_state(&state_path);
    let mut report = IngestReport::default();
    for (name, source) in &sources {
        let items = source.items()?;
        let resume = state.get(name).copied().unwrap_or(0).min(items.len());
        if resume > 0 {
            eprintln!(
                "{name}: resuming after {resume} of {} narinfos",
                items.len()
            );
        }
        let mut progress = Progress::new("narinfos", items.len() as u64);
        let mut done = resume;
        for chunk in items[resume..].chunks(BATCH) {
            let mut batch = Vec::new();
            for item in chunk {
                match source.fetch(item, &agent).and_then(|t| {
                    NarInfo::parse(&t).with_context(|| item.clone())?;
                    Ok(t)
                }) {
                    Ok(text) => batch.push((item.clone(), text)),
                    Err(e) => report.fail(format!("{e:#}")),
                }
            }
            if !batch.is_empty() {
                submit(&client, &batch, &mut report)?;
            }
            done += chunk.len();
            state.insert(name.clone(), done);
            save_state(&state_path, &state)?;
            progress.show(done as u64);
        }
        progress.show(items.len() as u64);
        progress.finish();
        // Finished: a later run starts over (the log drops what it already has).
        state.remove(name);
        save_state(&state_path, &state)?;
    }
    report.print(args.json)?;
    Ok(report.failed == 0)
}
