//! Nix store paths: `<store dir>/<32 nix32 characters>-<name>`.

use std::fmt;

use super::nix32;

/// The length of a store path's hash part.
pub const HASH_PART_LEN: usize = 32;
/// The longest name Nix allows.
pub const MAX_NAME_LEN: usize = 211;

/// Why a store path or store path base name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("store path must be absolute and end in <hash>-<name>")]
    NotAStorePath,
    #[error("hash part must be 32 nix32 characters")]
    BadHashPart,
    #[error("name must be 1 to 211 characters of A-Z a-z 0-9 + - . _ ? =")]
    BadName,
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
    Ok(())
}

impl StorePath {
    pub fn parse(path: &str) -> Result<Self, StorePathError> {
        let slash = path.rfind('/').ok_or(StorePathError::NotAStorePath)?;
        if !path.starts_with('/') || slash == 0 {
            return Err(StorePathError::NotAStorePath);
        }
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

    pub fn as_str(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}
