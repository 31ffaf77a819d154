//! What a start refuses before it binds or opens anything: an address
//! reachable beyond this machine without TLS and credentials (the gRPC port
//! and the metrics port alike), and certificate or auth files that do not
//! read. `caravan config check` runs the same checks.
//!
//! Depends on the server's settings, TLS and the identities.

use super::server::ServerConfig;
use super::tls::Tls;
use crate::auth::Access;
use crate::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

/// Refuses to serve an address that other machines can reach without TLS
/// and credentials: anyone who reaches the port could otherwise read and
/// write everything (or read tokens in the clear). Loopback addresses
/// (127.0.0.0/8, ::1) are served as they are; any other address needs TLS
/// and an auth file, or `insecure` (then with a warning).
pub fn check_exposure(
    listen: SocketAddr,
    tls: bool,
    credentials: bool,
    insecure: bool,
) -> Result<(), Error> {
    if listen.ip().is_loopback() || (tls && credentials) {
        return Ok(());
    }
    let missing = match (tls, credentials) {
        (false, false) => "TLS (--tls-cert and --tls-key) and credentials (--auth-file)",
        (false, true) => "TLS (--tls-cert and --tls-key)",
        _ => "credentials (--auth-file)",
    };
    if insecure {
        tracing::warn!(
            %listen,
            "serving beyond loopback without {missing} (--insecure): anyone who reaches this \
             port can do what that allows"
        );
        return Ok(());
    }
    Err(Error::Unavailable(format!(
        "refusing to listen on {listen} without {missing}: the address is reachable beyond \
         this machine. Add {missing}, listen on a loopback address (127.0.0.1 or [::1]), or \
         pass --insecure (CARAVAN_INSECURE=true) to serve it as it is"
    )))
}

/// Checks what a start would refuse before it binds or opens anything (the
/// certificate and auth files, an address beyond loopback without them):
/// `caravan config check`.
pub fn check_config(config: &ServerConfig) -> Result<(), Error> {
    checked(config).map(|_| ())
}

/// The TLS and identities of `config`, read and checked.
pub(super) fn checked(config: &ServerConfig) -> Result<(Option<Arc<Tls>>, Arc<Access>), Error> {
    let tls = config.tls.clone().map(Tls::load).transpose()?.map(Arc::new);
    let access = Arc::new(match &config.auth_file {
        Some(path) => Access::load(path, config.quotas)?,
        None => Access::open(),
    });
    check_exposure(
        config.listen,
        tls.is_some(),
        access.requires_credentials(),
        config.insecure,
    )?;
    if let Some(at) = config.metrics_listen {
        check_exposure(
            at,
            tls.is_some(),
            access.requires_credentials(),
            config.insecure,
        )
        .map_err(|e| Error::Unavailable(format!("--metrics-listen: {e}")))?;
    }
    if let Some(cluster) = &config.cluster {
        cluster.servers()?;
    }
    Ok((tls, access))
}

#[cfg(test)]
mod exposure_tests {
    use super::check_exposure;

    #[test]
    fn beyond_loopback_needs_tls_and_credentials_or_insecure() {
        for served in ["127.0.0.1:50051", "127.8.9.10:0", "[::1]:50051"] {
            let addr = served.parse().unwrap();
            assert!(
                check_exposure(addr, false, false, false).is_ok(),
                "{served}"
            );
        }
        for refused in ["0.0.0.0:50051", "[::]:0", "10.1.2.3:50051", "192.168.0.7:1"] {
            let addr = refused.parse().unwrap();
            for (tls, credentials, missing) in [
                (
                    false,
                    false,
                    "TLS (--tls-cert and --tls-key) and credentials (--auth-file)",
                ),
                (true, false, "credentials (--auth-file)"),
                (false, true, "TLS (--tls-cert and --tls-key)"),
            ] {
                let e = check_exposure(addr, tls, credentials, false)
                    .expect_err(refused)
                    .to_string();
                assert!(
                    e.contains(refused) && e.contains(missing) && e.contains("--insecure"),
                    "{e}"
                );
                assert!(check_exposure(addr, tls, credentials, true).is_ok());
            }
            assert!(check_exposure(addr, true, true, false).is_ok());
        }
    }
}
