//! The log server's store on a disk that fills up: the real binary, its store on a small
//! tmpfs. Mounting needs root (or CAP_SYS_ADMIN); where the test cannot mount it says so and
//! checks nothing (the sequencer's unit test covers the same error with a failing store).

use std::path::{Path, PathBuf};
use std::process::Command;

use reprolog_tests::{submit, synthetic_narinfo, write_builders, Server};
use reprolog_verifier::nix::NixSecretKey;
use serde_json::Value;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }

    fn available_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("running df");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df said {text:?}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server killed a moment ago may still hold its files open.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Each signature's status and index in a submission's answer.
fn statuses(answer: &Value) -> Vec<(String, Option<u64>)> {
    answer["narinfos"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .flat_map(|n| n["signatures"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            (
                s["status"].as_str().unwrap_or_default().to_owned(),
                s["index"].as_u64(),
            )
        })
        .collect()
}

/// Fills the store's disk until a submission fails, leaving `room` bytes for the log to fill,
/// then crashes the server, makes room and restarts it. Returns the failure as the server's
/// log told it.
fn fill_crash_and_restart(room: u64) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Only the store fills up: the key, the builders file and the server's log stay on the
    // test's own disk, so the log can say what happened.
    let store = data.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let disk = match Tmpfs::mount(&store, "8m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here ({})", why.trim());
            return None;
        }
    };
    let key = NixSecretKey::from_seed("builder-1", [3; 32]);
    write_builders(&data, &[key.public_key().to_string()]);
    let mut server = Server::start(&data, &[]);
    let filler = store.join("filler");
    let fill = disk.available_bytes().saturating_sub(room);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();

    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let mut refusal = None;
    for batch in 0..200u64 {
        let narinfos: Vec<String> = (0..50)
            .map(|i| synthetic_narinfo(&key, "full", batch * 50 + i, 0))
            .collect();
        let (status, answer) = submit(&server, &narinfos.join("\n"));
        if status != 200 {
            refusal = Some((status, answer));
            break;
        }
        for (narinfo, (state, index)) in narinfos.into_iter().zip(statuses(&answer)) {
            assert_eq!(state, "logged", "{answer}");
            acknowledged.push((narinfo, index.expect("a logged entry has an index")));
        }
    }
    let (status, answer) = refusal.expect("the disk never filled up");
    assert!(!acknowledged.is_empty(), "the disk was full from the start");
    // The client is told that the storage failed, not that its request was wrong.
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("storage"),
        "{answer}"
    );
    // The operator is told the disk is full, and nothing of corruption.
    let log = String::from_utf8_lossy(&server.log()).into_owned();
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!log.to_lowercase().contains("corrupt"), "{log}");

    // A crash while the disk is full, room made, a restart: every acknowledged entry is at
    // the index it was acknowledged with.
    server.kill();
    std::fs::remove_file(&filler).unwrap();
    let server = Server::start(&data, &[]);
    let body: Vec<&str> = acknowledged.iter().map(|(n, _)| n.as_str()).collect();
    let (status, answer) = submit(&server, &body.join("\n"));
    assert_eq!(status, 200, "{answer}");
    let again = statuses(&answer);
    assert_eq!(again.len(), acknowledged.len());
    for ((state, index), (_, acked)) in again.iter().zip(&acknowledged) {
        assert_eq!(
            (state.as_str(), *index),
            ("duplicate", Some(*acked)),
            "{answer}"
        );
    }
    let restarted = String::from_utf8_lossy(&server.log()).into_owned();
    assert!(!restarted.to_lowercase().contains("corrupt"), "{restarted}");
    drop(server);
    drop(disk);
    log.lines()
        .find(|l| l.contains("No space left on device"))
        .map(str::to_owned)
}

/// The disk fills up in a different file each time (entries, tree nodes, a hash index after
/// the commit); each time the answer is a 5xx, the log says the disk is full, and a restart
/// keeps every acknowledged entry.
#[test]
fn a_full_disk_is_told_as_such_and_loses_nothing_acknowledged() {
    for room in [65_536, 150_000, 200_000, 400_000] {
        match fill_crash_and_restart(room) {
            Some(failure) => println!("{room} bytes of room: {failure}"),
            None => return,
        }
    }
}
