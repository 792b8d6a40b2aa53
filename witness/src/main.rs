//! `reprolog-witness`: a C2SP tlog-witness. It is built under the witness issue; until then
//! this binary says so rather than pretend to cosign anything.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "reprolog-witness {}: the witness is not implemented yet (see the witness issue).",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
