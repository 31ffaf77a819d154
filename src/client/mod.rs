//! The command-line clients of a running caravan service: `caravan ingest`,
//! `caravan query …`, `caravan subscribe` and `caravan gen`. They talk to the
//! server only through the generated gRPC clients.
//!
//! Depends on the generated code, `jsonl`, `report` and clap; never on the
//! server's internals or sled.

pub mod comtrade;
pub mod gen;
pub mod ingest;
pub mod query;

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

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
