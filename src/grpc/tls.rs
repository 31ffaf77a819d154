//! The server's TLS: its certificate chain and key (`--tls-cert`,
//! `--tls-key`, PEM) and, for mutual TLS, the certificate authorities whose
//! client certificates it requires (`--tls-client-ca`). The files are read
//! at start (a file that cannot be read or used refuses the start) and again
//! on SIGHUP ([`Tls::reload`]): new connections get the new certificates,
//! open ones keep theirs, and files that fail keep the old configuration.
//!
//! rustls with the ring provider only, named explicitly (with two providers
//! built in, rustls cannot pick a default); HTTP/2 by ALPN.
//!
//! Depends on rustls, tokio-rustls and rustls-pki-types; knows nothing of
//! the services.

use crate::error::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where the server's TLS files are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate authorities of client certificates; when set, every
    /// client must present a certificate one of them issued.
    pub client_ca: Option<PathBuf>,
}

/// The TLS configuration in force, replaced whole on reload.
pub(crate) struct Tls {
    files: TlsFiles,
    /// For gRPC (ALPN h2) and for the metrics port (ALPN http/1.1: a client
    /// that offers both must not be steered to HTTP/2 there), built together.
    current: RwLock<Arc<Configs>>,
}

struct Configs {
    grpc: Arc<rustls::ServerConfig>,
    http1: Arc<rustls::ServerConfig>,
}

fn configs(files: &TlsFiles) -> Result<Configs, Error> {
    let grpc = build(files)?;
    let mut http1 = grpc.clone();
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Configs {
        grpc: Arc::new(grpc),
        http1: Arc::new(http1),
    })
}

fn refused(flag: &str, path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{flag} {}: {why}", path.display()))
}

fn certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(flag, path, format!("cannot be read ({e})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(flag, path, format!("is not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(refused(flag, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Builds a rustls configuration from the files.
fn build(files: &TlsFiles) -> Result<rustls::ServerConfig, Error> {
    let chain = certificates("--tls-cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        refused(
            "--tls-key",
            &files.key,
            format!("cannot be read as a PEM private key ({e})"),
        )
    })?;
    // ring, not aws-lc-rs: it builds from the crates alone (aws-lc needs
    // cmake), tonic's clients use it too, and rustls 0.23.48 deprecated
    // the function only to point at aws-lc's post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Unavailable(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates("--tls-client-ca", path)? {
                roots
                    .add(ca)
                    .map_err(|e| refused("--tls-client-ca", path, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| refused("--tls-client-ca", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::Unavailable(format!(
            "--tls-cert {} and --tls-key {} cannot be used together: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads the files; an error refuses the start.
    pub(crate) fn load(files: TlsFiles) -> Result<Tls, Error> {
        let current = configs(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Reads the files again; on failure the old configuration stays.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let current = configs(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(current);
        Ok(())
    }

    fn now(&self) -> Arc<Configs> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// An acceptor for gRPC with the configuration now in force.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.now().grpc))
    }

    /// The same certificates for HTTP/1.1 (the metrics port).
    pub(crate) fn http1_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.now().http1))
    }
}
