//! `reprolog keys`: rotate a builder key, revoke one as of an index, and show the registry's
//! history, each result verified from the log: the key event is proven in a checkpoint the
//! policy trusts, and the registry is recomputed from every key event (`spec/entry.md`, "Key
//! events").

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reprolog_verifier::dating::{parse_rfc3339, rfc3339, DatedCheckpoint, Timeline};
use reprolog_verifier::key_event::{KeyAction, KeyEvent, Revoker};
use reprolog_verifier::keyfile;
use reprolog_verifier::nix::{NixPublicKey, NixSecretKey};
use reprolog_verifier::note::SignerKey;
use reprolog_verifier::policy::{Policy, TrustedCheckpoint};
use reprolog_verifier::registry::KeyRegistry;
use serde::Serialize;

use crate::client::LogClient;
use crate::common::{
    cosigners, load_policy, log_client, policy_log_key, proven_registry, trusted_checkpoint,
};

/// How long to wait for a checkpoint that covers a submitted key event.
const PROOF_WAIT: Duration = Duration::from_secs(60);

/// A secret key file: refused when others may read it.
fn read_secret(path: &Path) -> Result<String> {
    keyfile::check_private(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(text.trim().to_owned())
}

fn nix_secret_key(path: &Path) -> Result<NixSecretKey> {
    NixSecretKey::parse(&read_secret(path)?)
        .with_context(|| format!("{}: not a Nix secret key", path.display()))
}

struct Session {
    policy: Policy,
    client: LogClient,
    trusted: TrustedCheckpoint,
}

impl Session {
    fn open(policy: &Path, log: Option<&str>) -> Result<Self> {
        let policy = load_policy(policy)?;
        let client = log_client(log, Some(&policy))?;
        let trusted = trusted_checkpoint(&client, &policy)?;
        Ok(Session {
            policy,
            client,
            trusted,
        })
    }

    fn origin(&self) -> &str {
        &self.trusted.checkpoint.origin
    }

    fn registry(&self) -> Result<KeyRegistry> {
        proven_registry(
            &self.client,
            &self.trusted.checkpoint,
            policy_log_key(Some(&self.policy), self.origin()),
        )
    }

    /// Submits `event`, waits for a trusted checkpoint that covers it, and recomputes the
    /// registry there: the event must be in it, applied at the index the log gave.
    fn submit_and_prove(&mut self, event: &KeyEvent) -> Result<(u64, KeyRegistry)> {
        let answer = self
            .client
            .submit_key_event(&event.encode())
            .context("the log refused the key event")?;
        let index = answer.index;
        let waiting = Instant::now();
        while self.trusted.checkpoint.size <= index {
            if waiting.elapsed() > PROOF_WAIT {
                bail!(
                    "the key event has index {index}, but no checkpoint the policy trusts \
                     covered it within {} s",
                    PROOF_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
            self.trusted = trusted_checkpoint(&self.client, &self.policy)?;
        }
        let registry = self.registry()?;
        if !registry
            .history()
            .iter()
            .any(|e| e.index == index && e.action == event.action)
        {
            bail!("the log answered index {index}, but its key event there is not this one");
        }
        Ok((index, registry))
    }

    /// The log's published checkpoints that satisfy the policy and carry a cosignature
    /// time, as a timeline. Checkpoints that do not satisfy it date nothing.
    fn timeline(&self) -> Result<Timeline> {
        let mut dated = Vec::new();
        self.client.for_each_checkpoint(|note| -> Result<()> {
            if let Ok(t) = self.policy.verify_checkpoint(note.as_bytes()) {
                if t.checkpoint.origin == self.origin() {
                    dated.extend(DatedCheckpoint::of(&t));
                }
            }
            Ok(())
        })?;
        Ok(Timeline::new(dated))
    }

    fn proven_in(&self) -> String {
        format!(
            "proven in checkpoint {} cosigned by {}",
            self.trusted.checkpoint.size,
            cosigners(&self.trusted.cosigned_by)
        )
    }
}

/// `reprolog keys rotate`: the old key hands its builder identity to the new key.
pub fn rotate(policy: &Path, log: Option<&str>, old: &Path, new: &Path) -> Result<i32> {
    let (old, new) = (nix_secret_key(old)?, nix_secret_key(new)?);
    let mut session = Session::open(policy, log)?;
    let event = KeyEvent::rotate(session.origin(), &old, &new);
    let (index, registry) = session.submit_and_prove(&event)?;
    let status = registry.status(&new.public_key(), index);
    let Some(identity) = status.identity() else {
        bail!("after the rotation the new key is {status}");
    };
    println!(
        "rotated {} to {} at index {index}: builder {identity}; {}",
        old.name,
        new.name,
        session.proven_in()
    );
    println!(
        "  {} is {}",
        old.name,
        registry.status(&old.public_key(), index)
    );
    Ok(0)
}

/// Who revokes: the key itself (a Nix secret key), or the operator (the log's signed-note
/// key, `PRIVATE+KEY+…`) for a key named by `--key`.
// One per command; its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Revoking {
    ByKey(NixSecretKey),
    ByOperator(SignerKey, NixPublicKey),
}

impl Revoking {
    pub fn from_files(key_file: &Path, key: Option<&str>) -> Result<Self> {
        let text = read_secret(key_file)?;
        if text.starts_with("PRIVATE+KEY+") {
            let operator = SignerKey::parse(&text)
                .with_context(|| format!("{}: not a signed-note key", key_file.display()))?;
            let key = key.context("the log's key revokes a key named by --key NAME:BASE64")?;
            let key = NixPublicKey::parse(key).context("--key")?;
            return Ok(Revoking::ByOperator(operator, key));
        }
        if key.is_some() {
            bail!("--key is for the operator's revocations; a key file revokes its own key");
        }
        Ok(Revoking::ByKey(NixSecretKey::parse(&text).with_context(
            || format!("{}: not a Nix secret key", key_file.display()),
        )?))
    }
}

/// `reprolog keys revoke`: signatures by the key logged at `as_of` or later are void.
pub fn revoke(
    policy: &Path,
    log: Option<&str>,
    revoking: Revoking,
    as_of: Option<u64>,
    as_of_time: Option<&str>,
) -> Result<i32> {
    let mut session = Session::open(policy, log)?;
    let as_of = match (as_of, as_of_time) {
        (Some(i), None) => i,
        (None, Some(time)) => {
            let time = parse_rfc3339(time)
                .with_context(|| format!("--as-of-time {time}: not YYYY-MM-DDTHH:MM:SSZ"))?;
            // Everything below it was in a checkpoint a witness cosigned before `time`.
            let index = session.timeline()?.first_index_at(time);
            println!("--as-of-time {}: index {index}", rfc3339(time));
            index
        }
        _ => bail!("give one of --as-of INDEX and --as-of-time TIME"),
    };
    let (event, key) = match &revoking {
        Revoking::ByKey(k) => (
            KeyEvent::revoke_by_key(session.origin(), k, as_of),
            k.public_key(),
        ),
        Revoking::ByOperator(op, k) => {
            if op.name() != session.origin() {
                bail!(
                    "the key file is the key of log {}, not of {}",
                    op.name(),
                    session.origin()
                );
            }
            (
                KeyEvent::revoke_by_operator(k.clone(), as_of, op),
                k.clone(),
            )
        }
    };
    let (index, registry) = session.submit_and_prove(&event)?;
    println!(
        "revoked {} as of index {as_of} (key event at index {index}); {}",
        key.name,
        session.proven_in()
    );
    if as_of > 0 {
        println!(
            "  at index {}: {}",
            as_of - 1,
            registry.status(&key, as_of - 1)
        );
    }
    println!("  from index {as_of}: {}", registry.status(&key, as_of));
    Ok(0)
}

/// One key event as `keys history --json` prints it.
#[derive(Serialize)]
struct HistoryLine {
    index: u64,
    kind: &'static str,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_by: Option<&'static str>,
    /// The builder identity the key serves.
    builder: String,
    /// When it was logged at the latest: the earliest cosignature of the first checkpoint
    /// that covers it (RFC 3339), when a witness cosigned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    logged_by: Option<String>,
}

/// The keys as they stand now.
#[derive(Serialize)]
struct KeyNow {
    key: String,
    builder: String,
    status: String,
}

#[derive(Serialize)]
struct History {
    checkpoint_size: u64,
    events: Vec<HistoryLine>,
    keys: Vec<KeyNow>,
}

/// `reprolog keys history`: every key event, proven, and each key's status now; only those
/// about keys or builders named `name` when given.
pub fn history(policy: &Path, log: Option<&str>, name: Option<&str>, json: bool) -> Result<i32> {
    let session = Session::open(policy, log)?;
    let registry = session.registry()?;
    let timeline = session.timeline()?;
    let identity_of = |k: &NixPublicKey| {
        registry
            .records()
            .find(|r| r.key == *k)
            .map_or_else(|| k.name.clone(), |r| r.identity.clone())
    };
    let about = |keys: &[&NixPublicKey]| {
        name.is_none_or(|n| keys.iter().any(|k| k.name == n || identity_of(k) == n))
    };
    let mut events = Vec::new();
    for e in registry.history() {
        let (key, new_key, as_of, revoked_by) = match &e.action {
            KeyAction::Register(k) | KeyAction::Unregister(k) => (k, None, None, None),
            KeyAction::Rotate { old, new } => (old, Some(new), None, None),
            KeyAction::Revoke { key, as_of, by } => (
                key,
                None,
                Some(*as_of),
                Some(match by {
                    Revoker::Key => "key",
                    Revoker::Operator => "operator",
                }),
            ),
        };
        let mut keys = vec![key];
        keys.extend(new_key);
        if !about(&keys) {
            continue;
        }
        events.push(HistoryLine {
            index: e.index,
            kind: e.action.kind(),
            key: key.to_string(),
            new_key: new_key.map(|k| k.to_string()),
            as_of,
            revoked_by,
            builder: identity_of(key),
            logged_by: timeline.logged_by(e.index).map(rfc3339),
        });
    }
    let keys: Vec<KeyNow> = registry
        .records()
        .filter(|r| about(&[&r.key]))
        .map(|r| KeyNow {
            key: r.key.to_string(),
            builder: r.identity.clone(),
            status: r.current_status().to_string(),
        })
        .collect();
    if json {
        let out = History {
            checkpoint_size: session.trusted.checkpoint.size,
            events,
            keys,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    for e in &events {
        let name = |k: &str| k.split_once(':').map_or(k, |(n, _)| n).to_owned();
        let what = match (e.kind, &e.new_key, e.as_of) {
            ("key-rotate", Some(new), _) => format!("{} -> {}", name(&e.key), name(new)),
            ("key-revoke", _, Some(as_of)) => format!(
                "{} as of index {as_of}, by {}",
                name(&e.key),
                e.revoked_by.unwrap_or_default()
            ),
            _ => name(&e.key),
        };
        let when = e
            .logged_by
            .as_ref()
            .map_or(String::new(), |t| format!(", logged by {t}"));
        println!(
            "index {:<8} {:<15} {what}  (builder {}{when})",
            e.index, e.kind, e.builder
        );
    }
    println!("keys now:");
    for k in &keys {
        println!("  {}  {}", k.key, k.status);
    }
    println!("{} key events, {}", events.len(), session.proven_in());
    Ok(0)
}
