//! Helpers for the end-to-end tests: locating the shared test data and running real Nix.
