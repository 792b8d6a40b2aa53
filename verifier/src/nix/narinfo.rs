//! narinfo files, parsed by Nix's rules (`NarInfo::NarInfo` in libstore's nar-info.cc), and the
//! signing fingerprint.
//!
//! Each line is `Key: Value\n`; the final newline is required. Unknown keys are ignored.
//! References and signatures are sets, as in Nix, so they come back sorted and without
//! repeats. Where Nix would silently take the last of two conflicting lines, this parser
//! refuses the file: a signing log must not read a narinfo differently from its signer.

use std::collections::BTreeSet;

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use super::keys::{NixPublicKey, NixSecretKey};
use super::nix32;
pub use super::signatures::SignatureStatus;
use super::signatures::{classify, SameNameKeys};
use super::store_path::{check_base_name, StorePath, StorePathError};

/// A narinfo parse error, with the 1-based line it was found on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct NarInfoError {
    /// The 1-based line of the narinfo the problem is on.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> NarInfoError {
    NarInfoError {
        line,
        reason: reason.into(),
    }
}

/// A SHA-256 hash as Nix writes it in narinfo files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NixHash(pub [u8; 32]);

impl NixHash {
    /// Parses `sha256:<nix32|hex|base64>` or SRI `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bytes = if let Some(v) = s.strip_prefix("sha256:") {
            match v.len() {
                52 => nix32::decode(v, 32).ok_or("bad nix32 hash")?,
                64 => decode_hex(v).ok_or("bad hex hash")?,
                44 => B64.decode(v).map_err(|_| "bad base64 hash")?,
                _ => return Err(format!("hash has the wrong length ({})", v.len())),
            }
        } else if let Some(v) = s.strip_prefix("sha256-") {
            B64.decode(v).map_err(|_| "bad SRI hash")?
        } else if s.contains(':') || s.contains('-') {
            return Err("only sha256 hashes are supported".into());
        } else {
            return Err("hash must start with sha256: or sha256-".into());
        };
        bytes
            .try_into()
            .map(NixHash)
            .map_err(|_| "hash must be 32 bytes".into())
    }

    /// `sha256:<nix32>`, the form Nix signs and writes.
    pub fn to_nix32(&self) -> String {
        format!("sha256:{}", nix32::encode(&self.0))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A parsed narinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// `StorePath:`, the path this narinfo describes (signed).
    pub store_path: StorePath,
    /// `URL:`, where the compressed NAR is, relative to the cache (not signed).
    pub url: String,
    /// `Compression:` of the file at `url` (not signed).
    pub compression: Option<String>,
    /// `FileHash:` of the compressed file (not signed).
    pub file_hash: Option<NixHash>,
    /// `FileSize:` of the compressed file (not signed).
    pub file_size: Option<u64>,
    /// `NarHash:`, the SHA-256 of the NAR serialisation (signed).
    pub nar_hash: NixHash,
    /// `NarSize:`, the NAR's size in bytes (signed).
    pub nar_size: u64,
    /// Base names, sorted and distinct.
    pub references: BTreeSet<String>,
    /// Base name of the deriver.
    pub deriver: Option<String>,
    /// `System:` the path was built for (not signed).
    pub system: Option<String>,
    /// `Sig:` values as written, sorted and distinct.
    pub sigs: BTreeSet<String>,
    /// `CA:`, the content address, as written (not signed).
    pub ca: Option<String>,
}

fn parse_u64(line: usize, v: &str) -> Result<u64, NarInfoError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(line, format!("{v:?} is not a decimal number")));
    }
    v.parse()
        .map_err(|_| err(line, format!("{v:?} is too large")))
}

fn set_once<T>(slot: &mut Option<T>, value: T, line: usize, key: &str) -> Result<(), NarInfoError> {
    if slot.is_some() {
        return Err(err(line, format!("{key} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

impl NarInfo {
    /// Parses a narinfo file as Nix writes it (`spec/standards.md`, "narinfo"), more
    /// strictly where Nix is lenient; the error names the line.
    pub fn parse(text: &str) -> Result<Self, NarInfoError> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references: Option<BTreeSet<String>> = None;
        let mut deriver = None;
        let mut system = None;
        let mut sigs = BTreeSet::new();
        let mut ca = None;

        let mut line_no = 0;
        let mut rest = text;
        while !rest.is_empty() {
            line_no += 1;
            let n = line_no;
            let (line, tail) = rest
                .split_once('\n')
                .ok_or_else(|| err(n, "the last line must end with a newline"))?;
            rest = tail;
            if line.contains('\r') {
                return Err(err(n, "carriage return in narinfo"));
            }
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| err(n, "expected \"Key: Value\""))?;
            let hash = |v: &str| NixHash::parse(v).map_err(|e| err(n, format!("{key}: {e}")));
            let base_name = |v: &str| -> Result<String, NarInfoError> {
                check_base_name(v).map_err(|e| err(n, format!("{key} {v:?}: {e}")))?;
                Ok(v.to_owned())
            };
            match key {
                "StorePath" => {
                    let p = StorePath::parse(value)
                        .map_err(|e: StorePathError| err(n, format!("StorePath: {e}")))?;
                    set_once(&mut store_path, p, n, key)?
                }
                "URL" => set_once(&mut url, value.to_owned(), n, key)?,
                "Compression" => set_once(&mut compression, value.to_owned(), n, key)?,
                "FileHash" => set_once(&mut file_hash, hash(value)?, n, key)?,
                "FileSize" => set_once(&mut file_size, parse_u64(n, value)?, n, key)?,
                "NarHash" => set_once(&mut nar_hash, hash(value)?, n, key)?,
                "NarSize" => set_once(&mut nar_size, parse_u64(n, value)?, n, key)?,
                "References" => {
                    let refs = value
                        .split(' ')
                        .filter(|r| !r.is_empty())
                        .map(base_name)
                        .collect::<Result<_, _>>()?;
                    set_once(&mut references, refs, n, key)?
                }
                "Deriver" if value == "unknown-deriver" => {}
                "Deriver" => set_once(&mut deriver, base_name(value)?, n, key)?,
                "System" => set_once(&mut system, value.to_owned(), n, key)?,
                "Sig" => {
                    sigs.insert(value.to_owned());
                }
                "CA" => set_once(&mut ca, value.to_owned(), n, key)?,
                _ => {}
            }
        }
        let end = line_no.max(1);
        let nar_size = nar_size.ok_or_else(|| err(end, "no NarSize line"))?;
        if nar_size == 0 {
            return Err(err(end, "NarSize is 0"));
        }
        Ok(NarInfo {
            store_path: store_path.ok_or_else(|| err(end, "no StorePath line"))?,
            url: url
                .filter(|u| !u.is_empty())
                .ok_or_else(|| err(end, "no URL line"))?,
            compression,
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| err(end, "no NarHash line"))?,
            nar_size,
            references: references.unwrap_or_default(),
            deriver,
            system,
            sigs,
            ca,
        })
    }

    /// The narinfo text, in the order and encodings Nix writes.
    pub fn to_text(&self) -> String {
        let mut s = format!("StorePath: {}\nURL: {}\n", self.store_path, self.url);
        if let Some(c) = &self.compression {
            s += &format!("Compression: {c}\n");
        }
        if let Some(h) = &self.file_hash {
            s += &format!("FileHash: {}\n", h.to_nix32());
        }
        if let Some(n) = self.file_size {
            s += &format!("FileSize: {n}\n");
        }
        s += &format!("NarHash: {}\n", self.nar_hash.to_nix32());
        s += &format!("NarSize: {}\n", self.nar_size);
        s += &format!(
            "References: {}\n",
            self.references
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        );
        if let Some(d) = &self.deriver {
            s += &format!("Deriver: {d}\n");
        }
        if let Some(sys) = &self.system {
            s += &format!("System: {sys}\n");
        }
        for sig in &self.sigs {
            s += &format!("Sig: {sig}\n");
        }
        if let Some(ca) = &self.ca {
            s += &format!("CA: {ca}\n");
        }
        s
    }

    /// The bytes Nix signs: `1;<path>;sha256:<nix32>;<size>;<sorted full reference paths>`.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Signs the narinfo with a Nix secret key, adding a `Sig:` line.
    pub fn sign(&mut self, key: &NixSecretKey) {
        self.sigs.insert(key.sign(&self.fingerprint()).to_string());
    }

    /// Checks every `Sig:` line against `trusted` as Nix does (the first trusted key of a
    /// name counts; [`SameNameKeys::FirstOnly`]), in the order the file lists them.
    pub fn check_signatures(&self, trusted: &[NixPublicKey]) -> Vec<(String, SignatureStatus)> {
        let fp = self.fingerprint();
        self.sigs
            .iter()
            .map(|raw| {
                let status = classify(&fp, raw, trusted, SameNameKeys::FirstOnly);
                (raw.clone(), status)
            })
            .collect()
    }
}

/// The Nix signing fingerprint from its parts. `references` are base names.
pub fn fingerprint<'a>(
    store_path: &StorePath,
    nar_hash: &NixHash,
    nar_size: u64,
    references: impl IntoIterator<Item = &'a String>,
) -> String {
    let dir = store_path.store_dir();
    let refs: BTreeSet<String> = references
        .into_iter()
        .map(|r| format!("{dir}/{r}"))
        .collect();
    format!(
        "1;{};{};{};{}",
        store_path,
        nar_hash.to_nix32(),
        nar_size,
        refs.into_iter().collect::<Vec<_>>().join(",")
    )
}
