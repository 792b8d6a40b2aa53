//! Nix formats: nix32, store paths, narinfo files, signing keys and the signing fingerprint,
//! and the classifier of narinfo signatures.

pub mod keys;
pub mod narinfo;
pub mod nix32;
pub mod signatures;
pub mod store_path;

pub use keys::{verify_batch, NixKeyError, NixPublicKey, NixSecretKey, NixSignature};
pub use narinfo::{NarInfo, NarInfoError};
pub use signatures::{classify, SameNameKeys, SignatureStatus};
pub use store_path::{StorePath, StorePathError};
