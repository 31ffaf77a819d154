//! `caravan subscribe`: prints events from a running service as they arrive,
//! as one line each or as proto3 JSON (`--output json`), until interrupted.
//!
//! Depends on the generated subscription client, `terminal` and the shared
//! client flags; never on the server's internals.

use super::{drain, json, list, CliError, ConnectArgs, Output, SectorArg};
use crate::proto::v1 as pb;
use crate::proto::v1::subscription_service_client::SubscriptionServiceClient;
use crate::tools::terminal::{period, usd_bn};
use clap::ValueEnum;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    TradeRecord,
    TradeRecordRetracted,
    Agreement,
    AgreementStatusChanged,
}

#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    /// Start after this sequence (a previous event's sequence or checkpoint).
    #[arg(long, conflicts_with = "from_beginning")]
    pub from: Option<u64>,
    /// Start with the first stored event (default: only new events).
    #[arg(long)]
    pub from_beginning: bool,
    #[arg(long)]
    pub countries: Vec<String>,
    #[arg(long, value_enum)]
    pub sectors: Vec<SectorArg>,
    #[arg(long, value_enum)]
    pub kinds: Vec<KindArg>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `caravan subscribe`: prints events as they arrive until interrupted.
pub async fn run(a: SubscribeArgs) -> Result<u8, CliError> {
    use pb::subscribe_request::Start;
    let start = match (a.from, a.from_beginning) {
        (Some(n), _) => Start::AfterSequence(n),
        (None, true) => Start::FromBeginning(pb::FromBeginning {}),
        (None, false) => Start::FromNow(pb::FromNow {}),
    };
    let request = pb::SubscribeRequest {
        start: Some(start),
        kinds: a
            .kinds
            .iter()
            .map(|k| match k {
                KindArg::TradeRecord => pb::EventKind::TradeRecord,
                KindArg::TradeRecordRetracted => pb::EventKind::TradeRecordRetracted,
                KindArg::Agreement => pb::EventKind::Agreement,
                KindArg::AgreementStatusChanged => pb::EventKind::AgreementStatusChanged,
            } as i32)
            .collect(),
        countries: list(&a.countries),
        sectors: a.sectors.iter().map(|s| s.wire()).collect(),
    };
    let mut client = SubscriptionServiceClient::new(a.connect.connect().await?);
    let s = client.subscribe(request).await?.into_inner();
    drain(s, |m| {
        for e in &m.events {
            match a.output {
                Output::Json => json(e, "caravan.v1.StoredEvent")?,
                Output::Table => {
                    let what = match e.event.as_ref().and_then(|e| e.payload.as_ref()) {
                        Some(pb::event::Payload::TradeRecord(r)) => format!(
                            "trade {} → {} {} {}",
                            r.reporter,
                            r.partner,
                            period(r.period.as_ref()),
                            usd_bn(r.value.as_ref())
                        ),
                        Some(pb::event::Payload::TradeRecordRetracted(r)) => {
                            format!("retraction: {}", r.reason)
                        }
                        Some(pb::event::Payload::Agreement(ag)) => {
                            format!("agreement {}: {}", ag.agreement_id, ag.title)
                        }
                        Some(pb::event::Payload::AgreementStatusChanged(c)) => {
                            format!("status change of {}", c.agreement_id)
                        }
                        None => String::new(),
                    };
                    let id = e.event.as_ref().map(|e| e.event_id.as_str()).unwrap_or("");
                    println!("{:>10}  {id}  {what}", e.sequence);
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(0)
}
