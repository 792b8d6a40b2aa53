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
