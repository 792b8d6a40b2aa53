//! The findings of the security review (docs/security.md), each attacked again over loopback
//! against the real binaries: appending without a key, flooding a path, amplifying memory,
//! poisoning checkpoints through a witness, burning CPU on bad signatures, overflowing
//! indexes, and redirecting writes through symbolic links.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use reprolog_tests::{
    get, get_json, submit, testdata, workspace_bin, write_builders, Server, Service,
};
use reprolog_verifier::nix::{nix32, NarInfo, NixSecretKey};
use reprolog_verifier::note::{Note, SignerKey};
use reprolog_verifier::policy::Policy;
use reprolog_verifier::tiles::{TileKind, TilePath};
use reprolog_verifier::witness_request::AddCheckpoint;
use sha2::{Digest, Sha256};

fn metric(server: &Server, name: &str) -> u64 {
    let (_, body) = get(&format!("{}/metrics", server.url));
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

/// The log's size once the server has started: one `key-register` event per key of its
/// builders file, logged before any submission is taken (spec/entry.md, "Key events").
fn key_events_at_start(server: &Server, builders: u64) -> u64 {
    let size = metric(server, "reprolog_tree_size");
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

fn store_file_bytes(server: &Server) -> u64 {
    std::fs::metadata(server.data.join("store/entries.data"))
        .unwrap()
        .len()
}

/// A narinfo for one fixed store path (`tag`), whose NAR hash is `variant`'s, with
/// `references` references, signed by `key`.
fn narinfo_of_path(key: &NixSecretKey, tag: &str, variant: u64, references: usize) -> String {
    let hash = |s: String| nix32::encode(&Sha256::digest(s)[..20]);
    let refs: Vec<String> = (0..references)
        .map(|i| format!("{}-reference-number-{i}", hash(format!("ref {i}"))))
        .collect();
    let text = format!(
        "StorePath: /nix/store/{}-{tag}\nURL: nar/x.nar\nCompression: none\n\
         NarHash: sha256:{}\nNarSize: {}\nReferences: {}\n",
        hash(tag.to_owned()),
        nix32::encode(&Sha256::digest(format!("{tag}/{variant}"))),
        1000 + variant,
        refs.join(" ")
    );
    let mut info = NarInfo::parse(&text).unwrap();
    info.sign(key);
    info.to_text()
}

fn lix() -> (String, String) {
    let dir = testdata().join("nix/lix");
    let key = std::fs::read_to_string(dir.join("cache.lix.systems.pub")).unwrap();
    let narinfo =
        std::fs::read_to_string(dir.join("0018nm26ljlp20g9m22bj55ql9kz3klz.narinfo")).unwrap();
    (key.trim().to_owned(), narinfo)
}

#[test]
fn a_resubmitted_signature_with_any_unsigned_field_changed_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (key, narinfo) = lix();
    write_builders(dir.path(), &[key]);
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, 1);
    let (status, a) = submit(&server, &narinfo);
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["narinfos"][0]["signatures"][0]["status"], "logged");
    let first = a["narinfos"][0]["signatures"][0]["index"].as_u64().unwrap();
    let bytes = store_file_bytes(&server);

    let deriver = "Deriver: 5iqpm377dcnzaj0bjip0alh6shvjrfpc-anything.drv\n";
    let variants = [
        format!("{narinfo}{deriver}"),
        format!("{narinfo}{}", deriver.replace("anything", "something-else")),
        narinfo.replace("CA: text:", "CA: fixed:r:"),
        narinfo.replace("CA: ", &format!("CA: {}", "x".repeat(60_000))),
        narinfo.replace("URL: nar/", "URL: elsewhere/"),
        narinfo.replace("Compression: zstd", "Compression: xz"),
        narinfo.replace("FileSize: 1429", "FileSize: 1430"),
        narinfo.replace("FileHash: sha256:1zp2", "FileHash: sha256:0000"),
        format!("{narinfo}System: x86_64-evil\n"),
        format!("{narinfo}X-Anything: goes\n"),
    ];
    for variant in &variants {
        assert_ne!(variant, &narinfo);
        let (status, a) = submit(&server, variant);
        assert_eq!(status, 200, "{a}");
        let sig = &a["narinfos"][0]["signatures"][0];
        assert_eq!(sig["status"], "duplicate", "{a}");
        assert_eq!(sig["index"].as_u64(), Some(first));
    }
    assert_eq!(metric(&server, "reprolog_tree_size"), base + 1);
    assert_eq!(store_file_bytes(&server), bytes, "the store did not grow");
}

/// Pages through a path's events with the raw API; returns every index.
fn all_indexes(server: &Server, hash_part: &str, limit: usize) -> Vec<u64> {
    let (mut indexes, mut after) = (Vec::new(), None::<u64>);
    loop {
        let url = match after {
            None => format!("{}/api/v1/paths/{hash_part}?limit={limit}", server.url),
            Some(a) => format!(
                "{}/api/v1/paths/{hash_part}?limit={limit}&after={a}",
                server.url
            ),
        };
        let (status, page) = get_json(&url);
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(!events.is_empty() && events.len() <= limit);
        indexes.extend(events.iter().map(|e| e["index"].as_u64().unwrap()));
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => return indexes,
        }
    }
}

#[test]
fn a_flooded_path_still_shows_the_disagreeing_claim_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = NixSecretKey::from_seed("builder-1", [1; 32]);
    let b2 = NixSecretKey::from_seed("builder-2", [2; 32]);
    write_builders(
        dir.path(),
        &[b1.public_key().to_string(), b2.public_key().to_string()],
    );
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, 2);
    // Builder 1 signs 1,200 NAR hashes for one path, more than one page holds; builder 2's
    // one different claim comes last.
    let flood: Vec<String> = (0..1200)
        .map(|v| narinfo_of_path(&b1, "flooded", v, 0))
        .collect();
    for chunk in flood.chunks(400) {
        let (status, a) = submit(&server, &chunk.join("\n"));
        assert_eq!(status, 200, "{a}");
    }
    let late = narinfo_of_path(&b2, "flooded", 999_999, 0);
    let (status, a) = submit(&server, &late);
    assert_eq!(status, 200, "{a}");
    let late_index = a["narinfos"][0]["signatures"][0]["index"].as_u64().unwrap();
    server.wait_for_checkpoint(base + 1201);

    let hash_part = NarInfo::parse(&late)
        .unwrap()
        .store_path
        .hash_part()
        .to_owned();
    let (_, first_page) = get_json(&format!("{}/api/v1/paths/{hash_part}", server.url));
    assert_eq!(first_page["events"].as_array().unwrap().len(), 100);
    assert!(first_page["next"].is_u64(), "more than one page is said");
    let indexes = all_indexes(&server, &hash_part, 1000);
    assert_eq!(indexes, (base..base + 1201).collect::<Vec<u64>>());
    assert_eq!(indexes.last(), Some(&late_index));

    // The CLI follows the pages: compare sees builder 2's claim, and verify proves it.
    let policy = dir.path().join("client-policy");
    std::fs::write(
        &policy,
        format!(
            "log {} {}\nquorum none\n",
            server.verifier_key(),
            server.url
        ),
    )
    .unwrap();
    let reprolog = |args: &[&str]| {
        Command::new(workspace_bin("reprolog"))
            .args(args)
            .output()
            .unwrap()
    };
    let path = NarInfo::parse(&late).unwrap().store_path.to_string();
    let out = reprolog(&["compare", "--policy", policy.to_str().unwrap(), &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(": unreproduced"), "{text}");
    assert!(text.contains("builder-2"), "{text}");
    let file = dir.path().join("late.narinfo");
    std::fs::write(&file, &late).unwrap();
    let out = reprolog(&[
        "verify",
        "--policy",
        policy.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("builder-2 at index {late_index}")),
        "{text}"
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn concurrent_lookups_of_the_largest_path_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[builder.public_key().to_string()]);
    let server = Server::start(dir.path(), &[]);
    // The largest path a registered builder can make: entries near the 64 KiB limit (1,000
    // references), 400 of them on one path: 26 MB of events.
    let events = 400;

    let narinfos: Vec<String> = (0..events)
        .map(|v| narinfo_of_path(&builder, "huge", v, 1000))
        .collect();
    for chunk in narinfos.chunks(100) {
        let (status, a) = submit(&server, &chunk.join("\n"));
        assert_eq!(status, 200, "{a}");
    }
    let entry_bytes = store_file_bytes(&server);
    assert!(entry_bytes > 25_000_000, "{entry_bytes}");
    let hash_part = NarInfo::parse(&narinfos[0])
        .unwrap()
        .store_path
        .hash_part()
        .to_owned();
    let before = peak_rss_kib(server.pid());

    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let indexes = all_indexes(&server, &hash_part, 1000);
                assert_eq!(indexes.len() as u64, events);
            });
        }
    });
    let after = peak_rss_kib(server.pid());
    let grew_mib = after.saturating_sub(before) / 1024;
    println!(
        "8 concurrent lookups of {events} events ({} MB): peak RSS {} → {} MiB (+{grew_mib} MiB)",
        entry_bytes / 1_000_000,
        before / 1024,
        after / 1024
    );
    // Each lookup page holds about 1 MiB of entries and 8 run at once; a lookup that built
    // its whole answer would hold 26 MB, several times over as JSON, per request.
    assert!(grew_mib < 128, "peak RSS grew by {grew_mib} MiB");
}

/// A witness that cosigns text other than the checkpoint it is sent. Its first answer is
/// lines that extend the note's text if read as part of it: `extra`, a blank line, and a
/// cosignature of the checkpoint text plus `extra`, which verifies if a log reads the answer
/// as the tail of a note over its own text (as reprolog once did). Later answers cosign a
/// different root.
fn hostile_witness(key: SignerKey) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let Ok(req) = AddCheckpoint::parse(&body) else {
                continue;
            };
            let note = Note::parse(req.checkpoint.as_bytes()).unwrap();
            let text = note.text().to_owned();
            let answer = if n == 0 {
                let extended = format!("{text}\nextra\n");
                format!("extra\n\n{}", key.cosign(&extended, 2).to_line())
            } else {
                let other_root = text.replacen('\n', "\n9", 1);
                key.cosign(&other_root, 1).to_line()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

#[test]
fn a_hostile_witness_cannot_poison_the_checkpoints_clients_verify() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    let data = dir.path().join("data");
    write_builders(&data, &[builder.public_key().to_string()]);
    let hostile = SignerKey::from_seed("example.com/hostile", [5; 32]).unwrap();
    let hostile_vkey = hostile.cosignature_verifier_key();
    let url = hostile_witness(hostile);
    let log_policy = dir.path().join("log-policy");
    std::fs::write(&log_policy, format!("witness h {hostile_vkey} {url}\n")).unwrap();
    let server = Server::start(&data, &["--policy", log_policy.to_str().unwrap()]);
    let base = key_events_at_start(&server, 1);
    let (status, a) = submit(&server, &narinfo_of_path(&builder, "p", 1, 0));
    assert_eq!(status, 200, "{a}");
    server.wait_for_checkpoint(base + 1);
    assert!(metric(&server, "reprolog_cosignatures_refused_total") >= 1);

    // A client that lists the hostile witness still verifies the log's checkpoint: the bad
    // lines were never attached.
    let policy = Policy::parse(&format!(
        "log {}\nwitness h {hostile_vkey}\nquorum none\n",
        server.verifier_key()
    ))
    .unwrap();
    let (_, note) = get(&format!("{}/checkpoint", server.url));
    let trusted = policy.verify_checkpoint(&note).unwrap();
    assert!(trusted.cosigned_by.is_empty());
    assert_eq!(Note::parse(&note).unwrap().signatures().len(), 1);
}

#[test]
fn invalid_signatures_cost_bounded_work_and_get_a_small_answer() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[builder.public_key().to_string()]);
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, 1);
    let impostor = NixSecretKey::from_seed("builder-1", [66; 32]);
    let stranger = NixSecretKey::from_seed("stranger", [67; 32]);
    for (key, error) in [
        (&impostor, "refused after 17 signatures that do not verify"),
        (&stranger, "no valid signature"),
    ] {
        // As many narinfos as one request may hold.
        let body: Vec<String> = (0..4096)
            .map(|v| narinfo_of_path(key, &format!("p{v}"), v, 0))
            .collect();
        let body = body.join("\n");
        assert!(body.len() > 1_000_000);
        let started = std::time::Instant::now();
        let (status, raw) = reprolog_tests::post_raw(
            &format!("{}/api/v1/narinfo", server.url),
            "text/x-nix-narinfo",
            body.as_bytes(),
        );
        let elapsed = started.elapsed();
        assert_eq!(status, 422);
        assert!(raw.len() < 4096, "a {} byte answer", raw.len());
        let a: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert!(a["error"].as_str().unwrap().contains(error), "{a}");
        assert!(a["first_reasons"].as_array().unwrap().len() <= 8);
        println!("{error}: {} byte answer in {elapsed:?}", raw.len());
    }
    // One more narinfo than a request may hold: refused before anything is verified.
    let body: Vec<String> = (0..4097)
        .map(|v| narinfo_of_path(&builder, &format!("q{v}"), v, 0))
        .collect();
    let (status, raw) = reprolog_tests::post_raw(
        &format!("{}/api/v1/narinfo", server.url),
        "text/x-nix-narinfo",
        body.join("\n").as_bytes(),
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&raw));
    assert!(String::from_utf8_lossy(&raw).contains("at most 4096"));
    assert_eq!(metric(&server, "reprolog_tree_size"), base);
    let (_, m) = get(&format!("{}/metrics", server.url));
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("reprolog_rejections_total{reason=\"invalid_signatures\"} 1"));
    assert!(m.contains("reprolog_rejections_total{reason=\"too_many_items\"} 1"));
}

#[test]
fn indexes_beyond_any_tree_are_refused_never_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[builder.public_key().to_string()]);
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, 1);
    let (status, _) = submit(&server, &narinfo_of_path(&builder, "p", 1, 0));
    assert_eq!(status, 200);
    server.wait_for_checkpoint(base + 1);
    let huge = [1u64 << 56, 1 << 63, u64::MAX];
    for index in huge {
        for kind in [
            TileKind::Entries,
            TileKind::Hashes { level: 0 },
            TileKind::Hashes { level: 1 },
        ] {
            for width in [256, 1] {
                let tile = TilePath { kind, index, width };
                let (status, body) = get(&format!("{}/{tile}", server.url));
                assert_eq!(status, 404, "{tile}: {}", String::from_utf8_lossy(&body));
            }
        }
        let queries = [
            format!("api/v1/proof/inclusion?index={index}&size={index}"),
            format!("api/v1/proof/inclusion?index={index}&size=1"),
            format!("api/v1/proof/consistency?old={index}&new={index}"),
            format!("api/v1/proof/consistency?old=1&new={index}"),
            format!("api/v1/paths/{}?after={index}", "0".repeat(32)),
        ];
        for q in queries {
            let status = get(&format!("{}/{q}", server.url)).0;
            assert!(status == 400 || status == 404, "{q}: {status}");
        }
        for q in [
            format!("api/v1/entries/{index}"),
            format!("api/v1/entries/{index}/tlog-proof"),
        ] {
            assert_eq!(get(&format!("{}/{q}", server.url)).0, 404, "{q}");
        }
    }
    for q in [
        "api/v1/entries/18446744073709551616",
        "api/v1/proof/inclusion?index=18446744073709551616&size=1",
        "tile/63/000",
    ] {
        let status = get(&format!("{}/{q}", server.url)).0;
        assert!(status == 400 || status == 404, "{q}: {status}");
    }
    // The server is unharmed and said nothing of corruption.
    assert_eq!(get(&format!("{}/tile/0/000.p/1", server.url)).0, 200);
    let log = std::fs::read_to_string(server.data.join("reprolog-server.log")).unwrap();
    assert!(!log.contains("corrupt") && !log.contains("ERROR"), "{log}");
}

fn try_start(data: &Path) -> Result<Service, String> {
    Service::try_start("reprolog-server", data, &[])
}

#[test]
fn data_directory_files_are_never_written_through_symbolic_links() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    symlink(&victim, data.join("log.vkey")).unwrap();
    let server = try_start(&data).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let vkey = std::fs::symlink_metadata(data.join("log.vkey")).unwrap();
    assert!(vkey.is_file(), "log.vkey is a file of its own now");
    drop(server);

    // A dangling link where the builders file would be created: refused, nothing created.
    let data = dir.path().join("data-2");
    std::fs::create_dir(&data).unwrap();
    let target = dir.path().join("created-through-a-link");
    symlink(&target, data.join("builders")).unwrap();
    let err = try_start(&data).err().expect("refused");
    assert!(err.contains("builders"), "{err}");
    assert!(!target.exists());

    // A store file as a link: opening the store refuses it.
    let data = dir.path().join("data-3");
    std::fs::create_dir_all(data.join("store")).unwrap();
    symlink(&victim, data.join("store/entries.data")).unwrap();
    let err = try_start(&data).err().expect("refused");
    assert!(err.contains("entries.data"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // A data directory others may write to is refused: they could plant such links.
    let data = dir.path().join("data-4");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = try_start(&data).err().expect("refused");
    assert!(err.contains("lets others write"), "{err}");
}

#[test]
fn store_paths_with_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[builder.public_key().to_string()]);
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, 1);
    let good = narinfo_of_path(&builder, "p", 1, 0);
    for bad in ["/nix/st\u{1b}[2Jore", "/nix//store", "/nix/store/."] {
        let text = good.replace("/nix/store", bad);
        let (status, a) = submit(&server, &text);
        assert_eq!(status, 400, "{bad:?}: {a}");
        assert!(
            a["error"].as_str().unwrap().contains("store directory"),
            "{a}"
        );
    }
    assert_eq!(metric(&server, "reprolog_tree_size"), base);
}
