//! Nix store paths: `<store dir>/<32 nix32 characters>-<name>`, by Nix's rules (`StorePath`
//! and `checkName` in libstore's path.cc): a name is 1 to 211 characters of
//! `[0-9a-zA-Z+-._?=]` and is not `.` or `..`, alone or before a dash. The store directory must
//! be absolute and canonical (Nix canonicalises its own `store` setting); this parser refuses
//! rather than canonicalises, so that every logged path has one spelling, and refuses control
//! characters anywhere, so that no path can carry terminal escapes to whoever prints it.

use std::fmt;

use super::nix32;

/// The length of a store path's hash part.
pub const HASH_PART_LEN: usize = 32;
/// The longest name Nix allows.
pub const MAX_NAME_LEN: usize = 211;

/// Why a store path or store path base name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    /// Not absolute, or no base name of the form `<hash>-<name>` after the last `/`.
    #[error("store path must be absolute and end in <hash>-<name>")]
    NotAStorePath,
    /// The base name does not start with 32 nix32 characters.
    #[error("hash part must be 32 nix32 characters")]
    BadHashPart,
    /// The name after the hash part breaks Nix's rules for names.
    #[error("name must be 1 to 211 characters of A-Z a-z 0-9 + - . _ ? =, and not . or ..")]
    BadName,
    /// The directory before the base name is not absolute and canonical, or has control
    /// characters.
    #[error("store directory must be an absolute, canonical path without control characters")]
    BadStoreDir,
}

/// A full store path, such as `/nix/store/0018nm…-name.drv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    path: String,
    /// Byte offset where the base name starts.
    base: usize,
}

/// Checks a base name, `<hash>-<name>`.
pub fn check_base_name(base: &str) -> Result<(), StorePathError> {
    let (hash, name) = base
        .split_at_checked(HASH_PART_LEN)
        .ok_or(StorePathError::BadHashPart)?;
    if !hash.bytes().all(|b| nix32::ALPHABET.contains(&b)) {
        return Err(StorePathError::BadHashPart);
    }
    let name = name
        .strip_prefix('-')
        .ok_or(StorePathError::NotAStorePath)?;
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b);
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(valid) {
        return Err(StorePathError::BadName);
    }
    let first_component = name.split('-').next().unwrap_or_default();
    if first_component == "." || first_component == ".." {
        return Err(StorePathError::BadName);
    }
    Ok(())
}

/// Checks a store directory: `/` followed by non-empty components, none `.` or `..`, no
/// trailing slash, no control characters.
fn check_store_dir(dir: &str) -> Result<(), StorePathError> {
    let components = dir.strip_prefix('/').ok_or(StorePathError::BadStoreDir)?;
    let canonical = components
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..");
    if !canonical || dir.chars().any(char::is_control) {
        return Err(StorePathError::BadStoreDir);
    }
    Ok(())
}

impl StorePath {
    /// Parses a full store path by Nix's rules, refusing any other spelling of it.
    pub fn parse(path: &str) -> Result<Self, StorePathError> {
        let slash = path.rfind('/').ok_or(StorePathError::NotAStorePath)?;
        if !path.starts_with('/') || slash == 0 {
            return Err(StorePathError::NotAStorePath);
        }
        check_store_dir(&path[..slash])?;
        check_base_name(&path[slash + 1..])?;
        Ok(StorePath {
            path: path.to_owned(),
            base: slash + 1,
        })
    }

    /// The store directory, such as `/nix/store`.
    pub fn store_dir(&self) -> &str {
        &self.path[..self.base - 1]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.path[self.base..]
    }

    /// The 32-character hash part, which names the narinfo file.
    pub fn hash_part(&self) -> &str {
        &self.path[self.base..self.base + HASH_PART_LEN]
    }

    /// The whole path.
    pub fn as_str(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0018nm26ljlp20g9m22bj55ql9kz3klz";

    #[test]
    fn nix_rules_for_names_and_store_directories() {
        for ok in [
            "hello",
            ".hello",
            "..hello",
            "a.-b",
            "x?=+_",
            &"n".repeat(211),
        ] {
            assert!(
                StorePath::parse(&format!("/nix/store/{HASH}-{ok}")).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            ".",
            "..",
            ".-x",
            "..-x",
            "",
            "a b",
            "a/b",
            "é",
            &"n".repeat(212),
        ] {
            assert!(
                check_base_name(&format!("{HASH}-{bad}")).is_err(),
                "{bad:?}"
            );
        }
        assert!(StorePath::parse("/gnu/store/0018nm26ljlp20g9m22bj55ql9kz3klz-x").is_ok());
        for dir in [
            "/nix//store",
            "/nix/./store",
            "/nix/../store",
            "/nix/store/",
            "/nix/st\u{1b}[31more",
            "/nix/\u{7f}",
            "/nix/\u{9b}store",
            "nix/store",
        ] {
            assert_eq!(
                StorePath::parse(&format!("{dir}/{HASH}-x")),
                Err(if dir.starts_with('/') {
                    StorePathError::BadStoreDir
                } else {
                    StorePathError::NotAStorePath
                }),
                "{dir:?}"
            );
        }
        // Hash parts use nix32, which has no e, o, u or t.
        assert!(check_base_name("0018nm26ljlp20g9m22bj55ql9kz3kle-x").is_err());
    }
}
