//! # reprolog-verifier
//!
//! Every format and proof of reprolog, the transparency log for Nix signing events, as pure
//! code (no network, no async, no file system but the `server` feature), shared by the log
//! server, the witness, the CLI and every client:
//!
//! - [`merkle`]: RFC 6962 hashing, inclusion and consistency proofs;
//! - [`note`]: C2SP signed-note keys and notes;
//! - [`checkpoint`]: C2SP tlog-checkpoint;
//! - [`cosignature`]: C2SP tlog-cosignature (cosignature/v1);
//! - [`dating`]: when entries were logged, from their checkpoints' cosignatures;
//! - [`tiles`]: C2SP tlog-tiles paths and entry bundles;
//! - [`proof`]: C2SP tlog-proof receipts;
//! - [`nix`]: nix32, store paths, narinfo, keys and the signing fingerprint;
//! - [`entry`]: the reprolog log entry (`spec/entry.md`);
//! - [`key_event`] and [`registry`]: key events in the log, and the registry of builder keys
//!   and identities they make;
//! - [`compare`]: reproducibility verdicts, in the project's one vocabulary;
//! - [`attestation`]: build attestations, in-toto statements with SLSA provenance;
//! - [`dsse`]: DSSE envelopes signed with Nix keys, for build attestations;
//! - [`decision`]: the gate's trust file and K-of-N decisions;
//! - [`policy`]: C2SP tlog-policy trust policies and quorum checks;
//! - [`witness_request`]: the C2SP tlog-witness add-checkpoint body;
//! - [`text`]: untrusted text made safe to print;
//! - [`api`]: the JSON bodies of the log's HTTP API, shared by server and clients;
//! - [`explorer_api`]: the JSON bodies of the explorer's research API;
//! - `keyfile` (feature `server`): a server's data directory: secret key files with mode 0600,
//!   public files written without following links, the directory's lock;
//! - `locks` (feature `server`): the servers' one policy for a poisoned lock;
//! - `prometheus` (feature `server`): the Prometheus text format the servers' `/metrics` use.
//!
//! Parsers take untrusted bytes: they return typed errors that say what is wrong and where,
//! and never panic.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod attestation;
pub mod checkpoint;
pub mod compare;
pub mod cosignature;
pub mod dating;
pub mod decision;
pub mod dsse;
pub mod entry;
pub mod explorer_api;
pub mod key_event;
#[cfg(feature = "server")]
pub mod keyfile;
#[cfg(feature = "server")]
pub mod locks;
pub mod merkle;
pub mod nix;
pub mod note;
pub mod policy;
#[cfg(feature = "server")]
pub mod prometheus;
pub mod proof;
pub mod registry;
pub mod text;
pub mod tiles;
pub mod witness_request;
