//! Every reference vector in ../shared/testdata: RFC 6962, Go sumdb notes, C2SP checkpoints,
//! cosignatures, tiles and the tlog-witness request body.

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use common::{labelled, read, scissored_blocks};
use reprolog_verifier::checkpoint::{Checkpoint, SignedCheckpoint};
use reprolog_verifier::merkle::{self, Hash, MemoryTree};
use reprolog_verifier::note::{KeyError, Note, NoteError, SignerKey, VerifierKey};
use reprolog_verifier::tiles::{decode_bundle, encode_bundle, TileKind, TilePath};
use reprolog_verifier::witness_request::AddCheckpoint;
use sha2::{Digest, Sha256};

fn hash(hex_str: &str) -> Hash {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

struct MerkleVectors {
    leaves: Vec<Vec<u8>>,
    roots: Vec<(u64, Hash)>,
    inclusions: Vec<(u64, u64, Vec<Hash>)>,
    consistencies: Vec<(u64, u64, Vec<Hash>)>,
    bundle: Vec<u8>,
    tile_sha256: String,
}

fn merkle_vectors() -> MerkleVectors {
    let text = read("merkle/rfc6962-reference.txt");
    let mut v = MerkleVectors {
        leaves: vec![],
        roots: vec![],
        inclusions: vec![],
        consistencies: vec![],
        bundle: vec![],
        tile_sha256: String::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "leaf" => v.leaves.push(hex::decode(f[2]).unwrap()),
            "root" => v.roots.push((f[1].parse().unwrap(), hash(f[2]))),
            "inclusion" | "consistency" => {
                let proof = f[3..]
                    .iter()
                    .filter(|h| !h.is_empty())
                    .map(|h| hash(h))
                    .collect();
                let row = (f[1].parse().unwrap(), f[2].parse().unwrap(), proof);
                if f[0] == "inclusion" {
                    v.inclusions.push(row)
                } else {
                    v.consistencies.push(row)
                }
            }
            "bundle" => v.bundle = hex::decode(f[1]).unwrap(),
            _ => {}
        }
    }
    // The tile's digest is in a comment: "tile/0/000.p/8 is … with\n# sha256 <hex>;".
    let after_tile = &text[text.find("tile/0/000.p/8").unwrap()..];
    let after_sha = &after_tile[after_tile.find("sha256 ").unwrap() + 7..];
    v.tile_sha256 = after_sha[..64].to_owned();
    assert_eq!(v.leaves.len(), 8);
    assert_eq!(v.roots.len(), 9);
    assert!(!v.inclusions.is_empty() && !v.consistencies.is_empty());
    assert_eq!(v.tile_sha256.len(), 64);
    v
}

fn reference_tree(leaves: &[Vec<u8>], size: usize) -> MemoryTree {
    let mut t = MemoryTree::new();
    for l in &leaves[..size] {
        t.push(merkle::leaf_hash(l));
    }
    t
}

#[test]
fn rfc6962_roots_of_every_size() {
    let v = merkle_vectors();
    assert_eq!(v.roots[0], (0, merkle::EMPTY_ROOT));
    for (size, root) in &v.roots {
        let t = reference_tree(&v.leaves, *size as usize);
        assert_eq!(t.root(), *root, "root of size {size}");
        assert_eq!(merkle::tree_hash(*size, &t).unwrap(), *root);
    }
}

#[test]
fn rfc6962_inclusion_proofs() {
    let v = merkle_vectors();
    let t = reference_tree(&v.leaves, 8);
    for (index, size, proof) in &v.inclusions {
        let sub = reference_tree(&v.leaves, *size as usize);
        assert_eq!(&merkle::prove_inclusion(*index, *size, &t).unwrap(), proof);
        let leaf = merkle::leaf_hash(&v.leaves[*index as usize]);
        merkle::verify_inclusion(proof, *index, *size, &leaf, &sub.root()).unwrap();
        let wrong_leaf = merkle::leaf_hash(b"not this leaf");
        assert!(merkle::verify_inclusion(proof, *index, *size, &wrong_leaf, &sub.root()).is_err());
    }
}

#[test]
fn rfc6962_consistency_proofs() {
    let v = merkle_vectors();
    let t = reference_tree(&v.leaves, 8);
    for (old, new, proof) in &v.consistencies {
        assert_eq!(&merkle::prove_consistency(*old, *new, &t).unwrap(), proof);
        let old_root = merkle::tree_hash(*old, &t).unwrap();
        let new_root = merkle::tree_hash(*new, &t).unwrap();
        merkle::verify_consistency(proof, *old, *new, &old_root, &new_root).unwrap();
        assert!(
            merkle::verify_consistency(proof, *old, *new, &new_root, &new_root).is_err()
                || old == new
        );
    }
}

#[test]
fn c2sp_tiles_of_the_reference_tree() {
    let v = merkle_vectors();
    let t = reference_tree(&v.leaves, 8);
    let tile = TilePath::parse("tile/0/000.p/8").unwrap();
    use merkle::HashReader;
    let data: Vec<u8> = t.read_hashes(&tile.nodes().unwrap()).unwrap().concat();
    assert_eq!(data.len(), 256);
    assert_eq!(hex::encode(Sha256::digest(&data)), v.tile_sha256);

    let bundle_path = TilePath::parse("tile/entries/000.p/8").unwrap();
    assert_eq!(bundle_path.kind, TileKind::Entries);
    assert_eq!(bundle_path.index_range(), Some(0..8));
    assert_eq!(encode_bundle(&v.leaves).unwrap(), v.bundle);
    let decoded = decode_bundle(&v.bundle).unwrap();
    assert_eq!(
        decoded,
        v.leaves.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
    assert!(decode_bundle(&v.bundle[..v.bundle.len() - 1]).is_err());
}

#[test]
fn go_sumdb_note_keys_and_signatures() {
    let text = read("note/vectors.txt");
    let signer = SignerKey::parse(labelled(&text, "signer")).unwrap();
    let verifier: VerifierKey = labelled(&text, "verifier").parse().unwrap();
    let second: VerifierKey = labelled(&text, "second verifier").parse().unwrap();
    assert_eq!(signer.verifier_key(), verifier);
    assert_eq!(signer.to_secret_string(), labelled(&text, "signer"));
    assert_eq!(verifier.to_string(), labelled(&text, "verifier"));

    let note_bytes = &scissored_blocks(&text)[0];
    let note = Note::parse(note_bytes.as_bytes()).unwrap();
    assert_eq!(note.encode(), *note_bytes);
    let verified = note.verify(&[verifier.clone(), second.clone()]).unwrap();
    assert_eq!(verified.len(), 2);

    // Ed25519 is deterministic, so re-signing reproduces the first line exactly.
    let mut resigned = Note::new(note.text()).unwrap();
    resigned.sign(&signer);
    assert_eq!(resigned.signatures()[0], note.signatures()[0]);

    // Unknown keys are ignored; a bad signature from a known key refuses the note.
    assert_eq!(note.verify(std::slice::from_ref(&second)).unwrap().len(), 1);
    let unknown = SignerKey::from_seed("PeterNeumann", [7; 32])
        .unwrap()
        .verifier_key();
    assert_eq!(note.verify(&[unknown]), Err(NoteError::NoKnownSignature));
    let tampered = note_bytes.replacen("cryptography", "Cryptography", 1);
    let tampered = Note::parse(tampered.as_bytes()).unwrap();
    assert!(matches!(
        tampered.verify(&[verifier, second]),
        Err(NoteError::BadSignature { .. })
    ));

    let bad = text
        .lines()
        .find(|l| l.contains("bad verifier keys"))
        .unwrap();
    let wrong_length = bad.split_whitespace().nth(3).unwrap();
    assert!(matches!(
        VerifierKey::parse(wrong_length),
        Err(KeyError::Malformed(_))
    ));
    let unknown_alg = text
        .lines()
        .find(|l| l.contains("(unknown algorithm)"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        VerifierKey::parse(unknown_alg),
        Err(KeyError::UnknownAlgorithm(0x65))
    );
}

struct CheckpointVectors {
    log: SignerKey,
    witness: SignerKey,
    timestamp: u64,
    cosigned: String,
    add_checkpoint: String,
    text: String,
}

fn checkpoint_vectors() -> CheckpointVectors {
    let text = read("note/vectors.txt");
    let seed = |label| -> [u8; 32] {
        hex::decode(labelled(&text, label))
            .unwrap()
            .try_into()
            .unwrap()
    };
    let log = SignerKey::from_seed("example.com/testlog", seed("log ed25519 seed (hex)")).unwrap();
    let witness =
        SignerKey::from_seed("example.com/witness1", seed("witness ed25519 seed (hex)")).unwrap();
    let blocks = scissored_blocks(&text);
    CheckpointVectors {
        log,
        witness,
        timestamp: labelled(&text, "cosignature timestamp").parse().unwrap(),
        cosigned: blocks[1].clone(),
        add_checkpoint: blocks[2].clone(),
        text,
    }
}

#[test]
fn cosigned_checkpoint_byte_for_byte() {
    let v = checkpoint_vectors();
    assert_eq!(v.log.to_secret_string(), labelled(&v.text, "log signer"));
    assert_eq!(
        v.log.verifier_key().to_string(),
        labelled(&v.text, "log verifier")
    );
    let witness_vkey = v.witness.cosignature_verifier_key();
    assert_eq!(
        witness_vkey.to_string(),
        labelled(&v.text, "witness verifier")
    );

    let leaves = merkle_vectors().leaves;
    let tree = reference_tree(&leaves, 8);
    let checkpoint = Checkpoint::new("example.com/testlog", 8, tree.root());
    let mut note = Note::new(&checkpoint.to_text()).unwrap();
    note.sign(&v.log);
    note.add_signature(v.witness.cosign(note.text(), v.timestamp));
    assert_eq!(note.encode(), v.cosigned);

    let opened = SignedCheckpoint::open(
        v.cosigned.as_bytes(),
        &v.log.verifier_key(),
        &[witness_vkey],
    )
    .unwrap();
    assert_eq!(opened.checkpoint, checkpoint);
    assert_eq!(opened.verified.len(), 2);
    assert_eq!(opened.verified[1].timestamp, Some(v.timestamp));

    // A cosignature over another timestamp than the one it carries does not verify.
    let mut forged = v.witness.cosign(note.text(), v.timestamp);
    forged.signature[7] ^= 1;
    let mut bad = Note::parse(v.cosigned.as_bytes()).unwrap();
    bad.add_signature(forged);
    assert!(SignedCheckpoint::open(
        bad.encode().as_bytes(),
        &v.log.verifier_key(),
        &[v.witness.cosignature_verifier_key()]
    )
    .is_err());
}

#[test]
fn add_checkpoint_body_byte_for_byte() {
    let v = checkpoint_vectors();
    let leaves = merkle_vectors().leaves;
    let tree = reference_tree(&leaves, 8);
    let mut note =
        Note::new(&Checkpoint::new("example.com/testlog", 8, tree.root()).to_text()).unwrap();
    note.sign(&v.log);
    let request = AddCheckpoint {
        old_size: 4,
        proof: merkle::prove_consistency(4, 8, &tree).unwrap(),
        checkpoint: note.encode(),
    };
    assert_eq!(request.encode(), v.add_checkpoint);
    assert_eq!(
        AddCheckpoint::parse(v.add_checkpoint.as_bytes()).unwrap(),
        request
    );

    let path = labelled(&v.text, "witness monitoring path for this origin:");
    let origin_hash = hex::encode(Sha256::digest(b"example.com/testlog"));
    assert_eq!(path, format!("/{origin_hash}/checkpoint"));
}

#[test]
fn checkpoint_errors_name_the_line() {
    let root = B64.encode([0u8; 32]);
    let cases = [
        (format!("o\n01\n{root}\n"), 2),
        (format!("o\n1\n{}\n", B64.encode([0u8; 31])), 3),
        (format!("\n1\n{root}\n"), 1),
        (format!("o\n1\n{root}\n\n"), 4),
        (format!("o\n1\n{root}"), 1),
    ];
    for (text, line) in cases {
        match Checkpoint::parse(&text) {
            Err(reprolog_verifier::checkpoint::CheckpointError::Malformed { line: l, .. }) => {
                assert_eq!(l, line, "{text:?}")
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }
    let with_ext = format!("o\n1\n{root}\next one\n");
    assert_eq!(Checkpoint::parse(&with_ext).unwrap().to_text(), with_ext);
}
