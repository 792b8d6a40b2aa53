//! `reprolog-server`: the reprolog log server. It is built under the log-server issue; until
//! then this binary says so rather than pretend to serve anything.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "reprolog-server {}: the log server is not implemented yet (see the log-server issue).",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
