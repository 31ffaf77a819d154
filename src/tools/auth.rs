//! `caravan auth`: what an operator needs to write the auth file —
//! `token` (a new strong token), `hash` (the SHA-256 to paste for a token
//! read from standard input, so that it never shows in `ps` or the shell's
//! history) and `subject` (a client certificate's subject as
//! `cert_subject` takes it).
//!
//! Depends on `auth` (hashing, subjects) and clap.

use crate::auth::token::{self, TokenHash};
use crate::auth::Subject;
use crate::tools::client::CliError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum AuthCommand {
    /// Print a new random token (32 bytes from the OS, hexadecimal): give it
    /// to the client, and its hash to the auth file.
    Token,
    /// Read a token from standard input and print its SHA-256, the
    /// `token_sha256` of its identity in the auth file.
    Hash,
    /// Print the subject of a PEM client certificate, as `cert_subject`
    /// takes it.
    Subject {
        /// The certificate (PEM).
        cert: PathBuf,
    },
}

pub fn run(what: AuthCommand) -> Result<u8, CliError> {
    match what {
        AuthCommand::Token => println!("{}", token::generate()?),
        AuthCommand::Hash => {
            let mut input = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut input)
                .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
            // One token, with or without its line's end.
            let token = input.trim_end_matches(['\n', '\r']);
            token::check_token(token)?;
            println!("{}", TokenHash::of(token).to_hex());
        }
        AuthCommand::Subject { cert } => {
            let der = CertificateDer::from_pem_file(&cert)
                .map_err(|e| format!("{}: not a PEM certificate ({e})", cert.display()))?;
            println!("{}", Subject::of_certificate(&der)?);
        }
    }
    Ok(0)
}
