//! Nix formats: nix32, store paths, narinfo files, signing keys and the signing fingerprint.

pub mod keys;
pub mod narinfo;
pub mod nix32;
pub mod store_path;

pub use keys::{verify_batch, NixKeyError, NixPublicKey, NixSecretKey, NixSignature};
pub use narinfo::{NarInfo, NarInfoError, SignatureStatus};
pub use store_path::{StorePath, StorePathError};
