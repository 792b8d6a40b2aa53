//! Real Nix (Debian's nix-bin) and reprolog agree on narinfo signatures, both ways.

use reprolog_tests::{build_pair, narinfo_path, nix, run_ok, stdout};
use reprolog_verifier::nix::{NarInfo, NixPublicKey, NixSecretKey, SignatureStatus};

fn nix_verify(cache: &std::path::Path, key: &str, path: &str) -> Option<i32> {
    nix(&["store", "verify", "--no-contents", "--store"])
        .arg(format!("file://{}", cache.display()))
        .args(["--trusted-public-keys", key, path])
        .output()
        .unwrap()
        .status
        .code()
}

#[test]
fn nix_accepts_narinfos_signed_by_reprolog() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, top) = build_pair(dir.path(), "signed-by-us");
    let cache = dir.path().join("cache");
    run_ok({
        let mut c = nix(&["copy", "--to"]);
        c.arg(format!("file://{}?compression=none", cache.display()))
            .arg(&top);
        c
    });
    let key = NixSecretKey::generate("reprolog-test-1");
    let public = key.public_key().to_string();
    assert_ne!(
        nix_verify(&cache, &public, &top),
        Some(0),
        "unsigned narinfo passed"
    );

    for path in [&dep, &top] {
        let file = narinfo_path(&cache, path);
        let text = std::fs::read_to_string(&file).unwrap();
        let mut info = NarInfo::parse(&text).unwrap();
        // Our serializer writes what Nix wrote, byte for byte.
        assert_eq!(info.to_text(), text);
        info.sign(&key);
        std::fs::write(&file, info.to_text()).unwrap();
    }
    assert_eq!(nix_verify(&cache, &public, &dep), Some(0));
    assert_eq!(nix_verify(&cache, &public, &top), Some(0));

    // The same name with another key: Nix refuses, so the check above could fail.
    let impostor = NixSecretKey::generate("reprolog-test-1")
        .public_key()
        .to_string();
    assert_ne!(nix_verify(&cache, &impostor, &top), Some(0));
}

#[test]
fn reprolog_accepts_narinfos_signed_by_nix() {
    let dir = tempfile::tempdir().unwrap();
    let (_, top) = build_pair(dir.path(), "signed-by-nix");
    let secret_file = dir.path().join("b1.sec");
    let secret = stdout(&run_ok(nix(&[
        "key",
        "generate-secret",
        "--key-name",
        "builder-1",
    ])));
    std::fs::write(&secret_file, &secret).unwrap();
    let public = stdout(&run_ok({
        let mut c = nix(&["key", "convert-secret-to-public"]);
        c.stdin(std::fs::File::open(&secret_file).unwrap());
        c
    }));
    // Nix's key files parse, and the public half we derive is the one Nix derives.
    let ours = NixSecretKey::parse(&secret).unwrap();
    assert_eq!(ours.public_key().to_string(), public);
    let public = NixPublicKey::parse(&public).unwrap();

    let cache = dir.path().join("cache");
    run_ok({
        let mut c = nix(&["copy", "--to"]);
        c.arg(format!(
            "file://{}?compression=none&secret-key={}",
            cache.display(),
            secret_file.display()
        ))
        .arg(&top);
        c
    });
    // A second signature added by `nix store sign` on the cache itself.
    let second_file = dir.path().join("b2.sec");
    let second = stdout(&run_ok(nix(&[
        "key",
        "generate-secret",
        "--key-name",
        "builder-2",
    ])));
    std::fs::write(&second_file, &second).unwrap();
    run_ok({
        let mut c = nix(&["store", "sign", "--store"]);
        c.arg(format!("file://{}", cache.display()))
            .arg("--key-file")
            .arg(&second_file)
            .arg(&top);
        c
    });
    let second_public = NixSecretKey::parse(&second).unwrap().public_key();

    let text = std::fs::read_to_string(narinfo_path(&cache, &top)).unwrap();
    let info = NarInfo::parse(&text).unwrap();
    assert_eq!(info.references.len(), 1, "top refers to dep");
    let statuses = info.check_signatures(&[public.clone(), second_public.clone()]);
    assert_eq!(statuses.len(), 2);
    for (_, status) in &statuses {
        assert!(matches!(status, SignatureStatus::Valid(_)), "{statuses:?}");
    }
    // And a narinfo Nix signed stops verifying when a signed field changes.
    let changed = NarInfo::parse(&text.replace("NarSize: ", "NarSize: 1")).unwrap();
    let statuses = changed.check_signatures(&[public, second_public]);
    assert!(
        statuses.iter().all(|(_, s)| *s == SignatureStatus::Invalid),
        "{statuses:?}"
    );
}
