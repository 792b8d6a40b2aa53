//! The examples in `spec/` parse with the code that implements them, so the two cannot drift.

use reprolog_verifier::policy::Policy;

fn spec(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of a Markdown file with the given info string ("" for none).
fn blocks(markdown: &str, info: &str) -> Vec<String> {
    let (mut found, mut open): (Vec<String>, Option<(bool, String)>) = (Vec::new(), None);
    for line in markdown.lines() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(tag)) => open = Some((tag == info, String::new())),
            (Some(_), Some(_)) => {
                if let Some((true, block)) = open.take() {
                    found.push(block);
                }
            }
            (Some((_, block)), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

#[test]
fn the_policy_example_parses_and_its_error_example_is_what_we_say() {
    let text = spec("policy.md");
    let examples = blocks(&text, "");
    assert_eq!(examples.len(), 1);
    let policy = Policy::parse(&examples[0]).unwrap();
    assert_eq!(policy.logs.len(), 1);
    assert_eq!(
        policy.logs[0].url.as_deref(),
        Some("https://log.example.org")
    );
    assert_eq!(policy.witnesses.len(), 2);

    let broken = examples[0].replace("group witnesses any w1 w2", "group witnesses 3 w1 w2");
    let error = Policy::parse(&broken).unwrap_err().to_string();
    assert!(
        text.contains(&format!("`{error}`")),
        "spec/policy.md should quote: {error}"
    );
}

/// Parses `text` as `T` and checks that writing it back gives the same JSON.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> T {
    let value: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let original: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_value(&value).unwrap(), original, "{text}");
    value
}

#[test]
fn every_json_example_in_the_api_spec_is_one_of_our_types() {
    use reprolog_verifier::api::*;
    let text = spec("api.md");
    let mut seen = std::collections::BTreeSet::new();
    for type_name in [
        "SubmitAnswer",
        "AttestationsAnswer",
        "ErrorAnswer",
        "InclusionProof",
        "ConsistencyProof",
        "LoggedEntry",
        "PathPage",
        "BuildersAnswer",
        "KeyEventPage",
        "KeyEventAnswer",
        "CheckpointPage",
    ] {
        let examples = blocks(&text, &format!("json {type_name}"));
        assert!(!examples.is_empty(), "no example of {type_name}");
        for example in &examples {
            match type_name {
                "SubmitAnswer" => drop(round_trip::<SubmitAnswer>(example)),
                "AttestationsAnswer" => drop(round_trip::<AttestationsAnswer>(example)),
                "ErrorAnswer" => drop(round_trip::<ErrorAnswer>(example)),
                "InclusionProof" => {
                    let p = round_trip::<InclusionProof>(example);
                    assert!(decode_proof(&p.proof).is_some());
                }
                "ConsistencyProof" => drop(round_trip::<ConsistencyProof>(example)),
                "LoggedEntry" => {
                    // A real entry: every decoded field is what its own bytes say.
                    let e = round_trip::<LoggedEntry>(example);
                    assert_eq!(LoggedEntry::new(e.index, e.entry.as_bytes()).unwrap(), e);
                }
                "PathPage" => {
                    let page = round_trip::<PathPage>(example);
                    assert_eq!(page.check_follows(None), Ok(()));
                }
                "BuildersAnswer" => {
                    let b = round_trip::<BuildersAnswer>(example);
                    // Only a key that serves a builder may sign.
                    for key in &b.builders {
                        assert_eq!(key.active, key.status.starts_with("valid for"), "{key:?}");
                    }
                }
                "KeyEventPage" => check_key_event_page(&round_trip::<KeyEventPage>(example)),
                "KeyEventAnswer" => drop(round_trip::<KeyEventAnswer>(example)),
                "CheckpointPage" => check_checkpoint_page(&round_trip::<CheckpointPage>(example)),
                _ => unreachable!(),
            }
        }
        seen.insert(type_name);
    }
    // The rotation refusal it quotes is the registry's own words.
    let reused = reprolog_verifier::registry::RegistryError::KeyReused(
        "cache.example.org-2:gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=".into(),
    );
    assert!(
        text.contains(&format!("{{\"error\": \"{reused}\"}}")),
        "spec/api.md should quote: {reused}"
    );
    // No JSON example goes unchecked.
    let all = text.matches("```json").count();
    let typed: usize = seen
        .iter()
        .map(|t| blocks(&text, &format!("json {t}")).len())
        .sum();
    assert_eq!(
        all, typed,
        "every ```json block in spec/api.md names its type"
    );
}

/// Real checkpoints of the vectors' log, cosigned by the witness the page names: each
/// satisfies a policy that requires the witness, and they date entries a minute apart.
fn check_checkpoint_page(page: &reprolog_verifier::api::CheckpointPage) {
    use reprolog_verifier::dating::{DatedCheckpoint, Timeline};
    let policy = reprolog_verifier::policy::Policy::parse(&format!(
        "log {}\nwitness w example.org/witness+e3ac402f+BEOnLnFEAXYt9mtowm373yaCquyfJHTspGE+QkoPuv08\nquorum w\n",
        vector_log_key()
    ))
    .unwrap();
    let dated: Vec<DatedCheckpoint> = page
        .checkpoints
        .iter()
        .map(|note| {
            DatedCheckpoint::of(&policy.verify_checkpoint(note.as_bytes()).unwrap()).unwrap()
        })
        .collect();
    let timeline = Timeline::new(dated);
    assert_eq!(timeline.logged_by(4), Some(1_796_284_800));
    assert_eq!(timeline.logged_by(5), Some(1_796_284_860));
    assert_eq!(timeline.first_index_at(1_796_284_830), 5);
}

/// The log of the key event vectors (spec/entry.md, "Key events"): `example.org/log`, seed 32
/// bytes of 0x09.
fn vector_log_key() -> reprolog_verifier::note::VerifierKey {
    reprolog_verifier::note::SignerKey::from_seed("example.org/log", [9; 32])
        .unwrap()
        .verifier_key()
}

/// A page of real key events: each is what its own bytes say, a key event with none of a
/// signing event's fields, and the page's history applies, in order, to an empty registry of
/// the log its `log_key` names.
fn check_key_event_page(page: &reprolog_verifier::api::KeyEventPage) {
    use reprolog_verifier::api::LoggedEntry;
    use reprolog_verifier::entry::LogEntry;
    use reprolog_verifier::registry::KeyRegistry;
    assert_eq!(page.check_follows(None), Ok(()));
    let log_key = vector_log_key();
    assert_eq!(page.log_key.as_deref(), Some(log_key.to_string().as_str()));
    let mut registry = KeyRegistry::new(log_key);
    for e in &page.events {
        assert_eq!(LoggedEntry::new(e.index, e.entry.as_bytes()).unwrap(), *e);
        assert!(e.kind.starts_with("key-"), "{e:?}");
        assert!(e.store_path.is_empty() && e.nar_hash.is_empty() && e.signature.is_empty());
        let LogEntry::Key(event) = LogEntry::decode(e.entry.as_bytes()).unwrap() else {
            panic!("entry {} is not a key event", e.index);
        };
        registry
            .apply(e.index, &event)
            .unwrap_or_else(|err| panic!("key event {}: {err}", e.index));
    }
}

#[test]
fn the_gate_specs_examples_parse() {
    use reprolog_verifier::decision::{Decision, Trust};
    let text = spec("gate.md");
    let trust = blocks(&text, "");
    assert_eq!(trust.len(), 1);
    let trust = Trust::parse(&trust[0]).unwrap();
    assert_eq!((trust.builders.len(), trust.quorum), (2, 2));
    let decisions = blocks(&text, "json Decision");
    assert_eq!(decisions.len(), 1);
    let d: Decision = round_trip(&decisions[0]);
    assert!(d.allowed);
    // The spec's error example is what the parser says.
    let broken = "builder a cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n\
                  builder b ci.example.org-1:cBGTqETmZyxCgqwvqQDRsvI0Yx7p3TbZ5AzSlNmNpAE=\n\
                  quorum 3\n";
    let error = Trust::parse(broken).unwrap_err().to_string();
    assert!(
        text.contains(&format!("`{error}`")),
        "spec/gate.md should quote: {error}"
    );
}

#[test]
fn the_attestation_example_is_our_statement_for_those_facts() {
    use reprolog_verifier::attestation::BuildFacts;
    use reprolog_verifier::nix::narinfo::NixHash;
    use reprolog_verifier::nix::StorePath;
    let text = spec("attestation.md");
    let examples = blocks(&text, "json");
    assert_eq!(examples.len(), 1);
    let example: serde_json::Value = serde_json::from_str(&examples[0]).unwrap();
    let s = |p: &str| {
        example
            .pointer(p)
            .and_then(|v| v.as_str())
            .unwrap()
            .to_owned()
    };
    let mut nar_hash = [0u8; 32];
    hex::decode_to_slice(s("/subject/0/digest/sha256"), &mut nar_hash).unwrap();
    let facts = BuildFacts {
        store_path: StorePath::parse(&s("/subject/0/name")).unwrap(),
        nar_hash: NixHash(nar_hash),
        nar_size: 120,
        references: Default::default(),
        derivation: StorePath::parse(&s(
            "/predicate/buildDefinition/externalParameters/derivation",
        ))
        .unwrap(),
        output: "out".into(),
        system: "x86_64-linux".into(),
        nix_version: "2.8.0".into(),
        started: 1_796_284_800,
        finished: 1_796_284_802,
    };
    let ours = facts.statement("builder-1");
    let ours_value: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    assert_eq!(ours_value, example, "{}", String::from_utf8_lossy(&ours));
    assert_eq!(BuildFacts::parse(&ours, "builder-1").unwrap(), facts);
}

#[test]
fn every_json_example_in_the_explorer_spec_is_one_of_our_types() {
    use reprolog_verifier::compare::{PathVerdict, Summary, Verdict};
    use reprolog_verifier::explorer_api::*;
    let text = spec("explorer-api.md");
    let mut typed = 0;
    for type_name in [
        "StatusAnswer",
        "PathAnswer",
        "SearchAnswer",
        "IndexedBuilders",
        "AgreementAnswer",
        "DisagreementsAnswer",
        "TimeseriesAnswer",
        "ReportAnswer",
    ] {
        let examples = blocks(&text, &format!("json {type_name}"));
        assert!(!examples.is_empty(), "no example of {type_name}");
        typed += examples.len();
        for example in &examples {
            match type_name {
                "StatusAnswer" => drop(round_trip::<StatusAnswer>(example)),
                "PathAnswer" => {
                    // The verdict is the one of the claims that count.
                    let p = round_trip::<PathAnswer>(example);
                    let counted: Vec<_> = p
                        .claims
                        .iter()
                        .filter(|c| c.void.is_none())
                        .map(|c| reprolog_verifier::compare::Claim {
                            builder: c.builder.clone(),
                            key: None,
                            nar_hash: c.nar_hash.clone(),
                            index: c.index,
                            kind: c.kind.clone(),
                        })
                        .collect();
                    assert_eq!(Verdict::of(&counted), p.verdict, "{example}");
                }
                "SearchAnswer" => drop(round_trip::<SearchAnswer>(example)),
                "IndexedBuilders" => drop(round_trip::<IndexedBuilders>(example)),
                "AgreementAnswer" => {
                    for p in round_trip::<AgreementAnswer>(example).pairs {
                        assert_eq!(p.agree + p.disagree, p.common, "{example}");
                    }
                }
                "DisagreementsAnswer" => drop(round_trip::<DisagreementsAnswer>(example)),
                "TimeseriesAnswer" => drop(round_trip::<TimeseriesAnswer>(example)),
                "ReportAnswer" => {
                    // The summary is the count of the verdicts listed.
                    let r = round_trip::<ReportAnswer>(example);
                    let verdicts: Vec<PathVerdict> = r
                        .paths
                        .iter()
                        .map(|p| PathVerdict::new(p.store_path.clone(), Vec::new()))
                        .map(|mut v| {
                            v.verdict = r
                                .paths
                                .iter()
                                .find(|p| p.store_path == v.store_path)
                                .map_or(Verdict::NotLogged, |p| p.verdict);
                            v
                        })
                        .collect();
                    assert_eq!(Summary::of(&verdicts), r.summary, "{example}");
                }
                _ => unreachable!(),
            }
        }
    }
    assert_eq!(
        text.matches("```json").count(),
        typed,
        "every ```json block in spec/explorer-api.md names its type"
    );
}
