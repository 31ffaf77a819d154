//! Identities: TLS and mutual TLS, tokens and scopes on every RPC, feeds
//! that own their data, per-identity quotas, the audit trail, and what
//! refuses a start. Certificates are made here with rcgen: a CA and leaves
//! it issues (rustls refuses a self-signed leaf).

mod audit;
mod cli;
mod feeds;
mod matrix;
mod mtls;
mod quotas;
mod startup;

use crate::helpers::*;
use caravan::auth::TokenHash;
use caravan::grpc::server::ServerConfig;
use caravan::grpc::TlsFiles;
use caravan::proto::v1 as pb;
use caravan::proto::v1::ingest_service_client::IngestServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    pub pem: Pem,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "caravan test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate whose subject is `CN=<cn>,O=Test Ministry`.
    pub fn client(&self, cn: &str) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Test Ministry");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One identity of an auth file.
pub struct Who {
    pub name: &'static str,
    pub token: Option<String>,
    pub cert_subject: Option<&'static str>,
    pub scopes: &'static [&'static str],
    pub feeds: &'static [&'static str],
    /// Extra lines (a quota table).
    pub more: &'static str,
}

impl Who {
    /// An identity with a fresh token.
    pub fn token(
        name: &'static str,
        scopes: &'static [&'static str],
        feeds: &'static [&'static str],
    ) -> Who {
        Who {
            name,
            token: Some(caravan_token()),
            cert_subject: None,
            scopes,
            feeds,
            more: "",
        }
    }

    pub fn toml(&self) -> String {
        let list = |xs: &[&str]| {
            xs.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!("[[identity]]\nname = {:?}\n", self.name);
        if let Some(t) = &self.token {
            out.push_str(&format!(
                "token_sha256 = \"{}\"\n",
                TokenHash::of(t).to_hex()
            ));
        }
        if let Some(s) = self.cert_subject {
            out.push_str(&format!("cert_subject = {s:?}\n"));
        }
        out.push_str(&format!("scopes = [{}]\n", list(self.scopes)));
        if !self.feeds.is_empty() {
            out.push_str(&format!("feeds = [{}]\n", list(self.feeds)));
        }
        out.push_str(self.more);
        out.push('\n');
        out
    }
}

/// A strong token, as `caravan auth token` makes them.
pub fn caravan_token() -> String {
    caravan::auth::token::generate().unwrap()
}

/// The text of an auth file of these identities.
pub fn auth_file(identities: &[&Who]) -> String {
    identities.iter().map(|w| w.toml()).collect()
}

/// A server with TLS (mutual when `client_ca`) and an auth file.
pub struct Secure {
    pub app: TestApp,
    pub ca: Ca,
    /// Holds the certificate and auth files while the server runs.
    _files: tempfile::TempDir,
    pub auth: PathBuf,
}

/// Starts the real server over TLS with the identities `auth` (TOML).
pub async fn secure_app(
    auth: &str,
    client_ca: Option<&Ca>,
    tune: impl FnOnce(&mut ServerConfig),
) -> Secure {
    let ca = Ca::new("caravan test CA");
    let files = tempfile::tempdir().unwrap();
    let server = ca.server();
    let cert = write(files.path(), "server.pem", &server.cert);
    let key = write(files.path(), "server.key", &server.key);
    let client_ca = client_ca.map(|c| write(files.path(), "clients-ca.pem", &c.pem.cert));
    let auth_path = write(files.path(), "auth.toml", auth);
    let dir = tempfile::tempdir().unwrap();
    let auth_for_config = auth_path.clone();
    let app = spawn_app_in(dir, move |c| {
        c.tls = Some(TlsFiles {
            cert,
            key,
            client_ca,
        });
        c.auth_file = Some(auth_for_config);
        tune(c);
    })
    .await;
    Secure {
        app,
        ca,
        _files: files,
        auth: auth_path,
    }
}

impl Secure {
    /// A TLS channel that trusts the server's CA, with a client
    /// certificate when `client` is given.
    pub async fn channel(&self, client: Option<&Pem>) -> Result<Channel, tonic::transport::Error> {
        tls_channel(self.app.addr, &self.ca.pem.cert, client).await
    }

    /// Rewrites the auth file and re-reads it, as SIGHUP does.
    pub fn reload_auth(&self, text: &str) {
        std::fs::write(&self.auth, text).unwrap();
        self.app.reload().expect("the new auth file is read");
    }
}

/// A TLS channel to `addr` that trusts `ca_pem`.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&Pem>,
) -> Result<Channel, tonic::transport::Error> {
    tls_endpoint(addr, ca_pem, client)?.connect().await
}

/// The endpoint of [`tls_channel`], to adjust before connecting.
pub fn tls_endpoint(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&Pem>,
) -> Result<Endpoint, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
}

/// A request carrying `token` as its bearer token.
pub fn authed<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// A trade record of `feed`.
pub fn trade_of(feed: &str, id: &str, reporter: &str, partner: &str, units: i64) -> pb::Event {
    let mut e = trade(id, reporter, partner, 2022, units);
    e.feed = feed.into();
    e
}

/// Appends with a token.
pub async fn append_as(
    ch: &Channel,
    token: &str,
    events: Vec<pb::Event>,
) -> Result<Vec<pb::Ack>, tonic::Status> {
    IngestServiceClient::new(ch.clone())
        .append(authed(pb::AppendRequest::new(events), Some(token)))
        .await
        .map(|r| r.into_inner().acks)
}

/// The newest durable sequence, asked with a token of the ingest scope.
pub async fn last_as(ch: &Channel, token: &str) -> u64 {
    IngestServiceClient::new(ch.clone())
        .lookup_events(authed(pb::LookupEventsRequest::default(), Some(token)))
        .await
        .expect("lookup")
        .into_inner()
        .last_sequence
}
