//! The command-line clients of a running caravan service: `caravan ingest`
//! (with the Comtrade CSV reader, `comtrade`), `caravan query …` and
//! `caravan subscribe`, and what they share: where the server is, the output
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
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

/// Where the server is, for every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The caravan server's URL.
    #[arg(long, env = "CARAVAN_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Seconds to wait for the connection (and, for queries, for the answer).
    #[arg(long, env = "CARAVAN_TIMEOUT_SECS", default_value_t = 10)]
    pub timeout_secs: u64,
}

/// A failure the command reports on one line.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

impl ConnectArgs {
    /// Connects, or fails with one clear line.
    pub async fn connect(&self) -> Result<Channel, CliError> {
        let endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| format!("{:?} is not a server URL: {e}", self.server))?
            .connect_timeout(Duration::from_secs(self.timeout_secs))
            .tcp_nodelay(true);
        endpoint.connect().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            format!(
                "cannot reach the caravan server at {}: {cause}",
                self.server
            )
            .into()
        })
    }
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
