//! The command-line clients of a running caravan service: `caravan ingest`
//! (with the Comtrade CSV reader, `comtrade`), `caravan query …` and
//! `caravan subscribe`, and what they share: where the server is and how to
//! prove who we are (a bearer token, TLS, a client certificate), the output
//! format, sector flags, list flags, reading a stream. They talk to the
//! server only through the generated gRPC clients.
//!
//! Depends on the generated code, `jsonl`, `terminal` and clap; never on the
//! server's internals or sled.

pub mod comtrade;
pub mod ingest;
pub mod query;
pub mod subscribe;

use crate::tools::jsonl::message_to_json;
use clap::ValueEnum;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Streaming;

/// Where the server is and how to prove who we are, for every client
/// command.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The caravan server's URL: http://host:port, or https://host:port for
    /// TLS.
    #[arg(long, env = "CARAVAN_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Seconds to wait for the connection (and, for queries, for the answer).
    #[arg(long, env = "CARAVAN_TIMEOUT_SECS", default_value_t = 10)]
    pub timeout_secs: u64,
    /// Bearer token of this client's identity (sent as `authorization:
    /// Bearer …`). Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "CARAVAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate(s) of the authority that issued the server's
    /// certificate (https:// only); without it, the system's authorities.
    #[arg(long, env = "CARAVAN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, env = "CARAVAN_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "CARAVAN_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// A failure the command reports on one line.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// A connection that sends the client's bearer token with every call.
pub type Connection = InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <token>` to every call, when there is a
/// token.
#[derive(Clone, Debug)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Credentials {
    /// The credentials of a token (none without one).
    pub fn bearer(token: Option<&str>) -> Result<Credentials, CliError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Credentials(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token holds characters a header cannot carry (visible ASCII only)")?;
        value.set_sensitive(true);
        Ok(Credentials(Some(value)))
    }
}

fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()).into())
}

impl ConnectArgs {
    /// The server's address, with TLS for https:// URLs.
    fn endpoint(&self) -> Result<Endpoint, CliError> {
        let mut endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| format!("{:?} is not a server URL: {e}", self.server))?
            .connect_timeout(Duration::from_secs(self.timeout_secs))
            .tcp_nodelay(true);
        let https = self.server.starts_with("https://");
        if !https {
            if self.ca_cert.is_some() || self.client_cert.is_some() {
                return Err(format!(
                    "--ca-cert and --client-cert need an https:// server URL, not {}",
                    self.server
                )
                .into());
            }
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read_pem("--ca-cert", path)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls = tls.identity(Identity::from_pem(
                read_pem("--client-cert", cert)?,
                read_pem("--client-key", key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS for {}: {e}", self.server))?;
        Ok(endpoint)
    }

    /// Connects (with the token, if any), or fails with one clear line.
    pub async fn connect(&self) -> Result<Connection, CliError> {
        let credentials = Credentials::bearer(self.token.as_deref())?;
        let channel = self.channel().await?;
        Ok(InterceptedService::new(channel, credentials))
    }

    /// Connects without credentials.
    async fn channel(&self) -> Result<Channel, CliError> {
        let endpoint = self.endpoint()?;
        endpoint.connect().await.map_err(|e| {
            format!(
                "cannot reach the caravan server at {}: {}",
                self.server,
                causes(&e)
            )
            .into()
        })
    }
}

/// An error and its causes, the innermost last (a TLS failure is several
/// layers down: "invalid peer certificate: UnknownIssuer").
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SectorArg {
    AgricultureFood,
    Energy,
    MiningMetals,
    Chemicals,
    MachineryElectronics,
    Textiles,
    ConstructionInfrastructure,
    TransportLogistics,
    DigitalEconomy,
    FinanceInvestment,
    Tourism,
    Healthcare,
    GreenDevelopment,
    Other,
}

impl SectorArg {
    pub(crate) fn wire(self) -> i32 {
        use crate::domain::Sector as S;
        let sector = match self {
            SectorArg::AgricultureFood => S::AgricultureFood,
            SectorArg::Energy => S::Energy,
            SectorArg::MiningMetals => S::MiningMetals,
            SectorArg::Chemicals => S::Chemicals,
            SectorArg::MachineryElectronics => S::MachineryElectronics,
            SectorArg::Textiles => S::Textiles,
            SectorArg::ConstructionInfrastructure => S::ConstructionInfrastructure,
            SectorArg::TransportLogistics => S::TransportLogistics,
            SectorArg::DigitalEconomy => S::DigitalEconomy,
            SectorArg::FinanceInvestment => S::FinanceInvestment,
            SectorArg::Tourism => S::Tourism,
            SectorArg::Healthcare => S::Healthcare,
            SectorArg::GreenDevelopment => S::GreenDevelopment,
            SectorArg::Other => S::Other,
        };
        crate::convert::pb_sector(sector) as i32
    }
}

/// Splits comma-separated list arguments.
pub(crate) fn list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Calls `each` with every message of a stream; a status ends it as an error.
pub(crate) async fn drain<T>(
    mut s: Streaming<T>,
    mut each: impl FnMut(T) -> Result<(), CliError>,
) -> Result<(), CliError> {
    while let Some(m) = s
        .message()
        .await
        .map_err(|st| format!("{:?}: {}", st.code(), st.message()))?
    {
        each(m)?;
    }
    Ok(())
}

/// Prints a message as one line of proto3 JSON.
pub(crate) fn json<M: Message>(m: &M, name: &str) -> Result<(), CliError> {
    println!("{}", message_to_json(m, name)?);
    Ok(())
}
