//! One connection of `caravan ingest`: sends its batches in order, one
//! Append at a time (so that a figure's revision never overtakes it), and
//! re-sends a batch after a dropped connection (ingestion is idempotent). A
//! batch the server refuses as a whole (a bad event in it: Append is all or
//! nothing) is sent again event by event over AppendStream, which answers
//! each one, so that every good event is stored and every bad one is listed
//! with its line.
//!
//! Depends on the generated client and `ConnectArgs`; never on the parsers.

use super::{Batch, Rejection, Tally};
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_client::IngestServiceClient;
use crate::tools::client::{CliError, ConnectArgs, Connection};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The first wait before reconnecting; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one connection needs.
pub(crate) struct Sender {
    pub(crate) connect: Arc<ConnectArgs>,
    pub(crate) tally: Arc<Tally>,
    /// Give up after this long without an answer from the server.
    pub(crate) retry: Duration,
    /// The highest sequence this connection has seen: the server's last
    /// before the run, then its own acknowledgements'. An event this
    /// connection re-sent, answered as a duplicate at a higher sequence than
    /// it had seen before the first send, was stored by that send (a true
    /// duplicate of this run's is always on the same connection, its key's,
    /// at a sequence it has seen).
    pub(crate) high: u64,
}

/// How a failed call goes on.
enum Next {
    /// Wait this long, reconnect and send again.
    Retry(Duration),
    /// The server refused the batch for what is in it: send it event by event.
    OneByOne,
}

/// A status no retry can cure ends the command with its message.
fn classify(status: &tonic::Status, backoff: Duration) -> Result<Next, CliError> {
    use tonic::Code;
    use tonic_types::StatusExt;
    match status.code() {
        Code::Unauthenticated | Code::Unimplemented => {
            Err(format!("the server refused: {}", status.message()).into())
        }
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::OutOfRange => Ok(Next::OneByOne),
        Code::ResourceExhausted => Ok(match status.get_details_retry_info() {
            // A quota: the server says when to come back.
            Some(info) => Next::Retry(info.retry_delay.unwrap_or(backoff)),
            // Too large as one message.
            None => Next::OneByOne,
        }),
        _ => Ok(Next::Retry(backoff)),
    }
}

fn rejection_text(r: &pb::Rejection) -> String {
    if r.field_violations.is_empty() {
        return r.message.clone();
    }
    r.field_violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Sender {
    /// Sends every batch from `batches` until the queue closes.
    pub(crate) async fn run(mut self, mut batches: mpsc::Receiver<Batch>) -> Result<(), CliError> {
        let mut client = None;
        while let Some(batch) = batches.recv().await {
            self.send(&mut client, &batch).await?;
        }
        Ok(())
    }

    /// A client on a connection of its own, connecting if there is none;
    /// `Ok(None)` after a failed try (the caller waits and tries again).
    async fn client<'a>(
        &self,
        client: &'a mut Option<IngestServiceClient<Connection>>,
    ) -> Result<Option<&'a mut IngestServiceClient<Connection>>, CliError> {
        if client.is_none() {
            match self.connect.connect().await {
                Ok(c) => *client = Some(IngestServiceClient::new(c)),
                Err(e) => {
                    eprintln!("caravan ingest: {e}");
                    return Ok(None);
                }
            }
        }
        Ok(client.as_mut())
    }

    /// Waits before another try, or gives up when the server has not
    /// answered for the retry time.
    async fn wait(&self, since: Instant, wait: Duration) -> Result<(), CliError> {
        if since.elapsed() + wait > self.retry {
            return Err(format!(
                "gave up after {} s without an answer from the server at {}",
                self.retry.as_secs(),
                self.connect.server
            )
            .into());
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Counts one answer. `resent`: the highest sequence seen before the
    /// batch was first sent, when it is being sent again; `counted`: the
    /// sequences of the batch already counted as stored (an event repeated in
    /// one batch is stored once).
    fn count(&mut self, ack: &pb::Ack, resent: Option<u64>, counted: &mut HashSet<u64>) {
        let stored = if ack.duplicate {
            resent.is_some_and(|high| ack.sequence > high) && counted.insert(ack.sequence)
        } else {
            counted.insert(ack.sequence);
            true
        };
        if stored {
            self.tally.stored();
        } else {
            self.tally.duplicate();
        }
        self.high = self.high.max(ack.sequence);
    }

    async fn send(
        &mut self,
        client: &mut Option<IngestServiceClient<Connection>>,
        batch: &Batch,
    ) -> Result<(), CliError> {
        let since = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let high_before = self.high;
        let mut resent = None;
        loop {
            let Some(c) = self.client(client).await? else {
                self.wait(since, backoff).await?;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            let mut request = tonic::Request::new(pb::AppendRequest::received(batch.body.clone()));
            // A server that stops answering is given up like an unreachable one.
            request.set_timeout(self.retry);
            let status = match c.append(request).await {
                Ok(answer) => {
                    let acks = answer.into_inner().acks;
                    if acks.len() != batch.lines.len() {
                        return Err(format!(
                            "the server answered {} of a batch of {} events",
                            acks.len(),
                            batch.lines.len()
                        )
                        .into());
                    }
                    let mut counted = HashSet::new();
                    for ack in &acks {
                        self.count(ack, resent, &mut counted);
                    }
                    return Ok(());
                }
                Err(status) => status,
            };
            match classify(&status, backoff)? {
                Next::OneByOne => return self.one_by_one(client, batch, resent).await,
                Next::Retry(wait) => {
                    eprintln!(
                        "caravan ingest: connection lost ({}); reconnecting, {} events to re-send",
                        status.message(),
                        batch.lines.len()
                    );
                    *client = None;
                    resent = Some(high_before);
                    self.wait(since, wait).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends a refused batch's events over AppendStream, which answers each.
    async fn one_by_one(
        &mut self,
        client: &mut Option<IngestServiceClient<Connection>>,
        batch: &Batch,
        mut resent: Option<u64>,
    ) -> Result<(), CliError> {
        let high_before = self.high;
        let events = pb::AppendRequest::received(batch.body.clone())
            .into_events()
            .map_err(|e| format!("a batch this command built does not decode: {e}"))?;
        let mut next = 0; // the first event without an answer
        let mut counted = HashSet::new();
        let mut since = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        while next < events.len() {
            let Some(c) = self.client(client).await? else {
                self.wait(since, backoff).await?;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            let requests = events[next..]
                .iter()
                .map(|e| pb::AppendStreamRequest {
                    event: Some(e.clone()),
                })
                .collect::<Vec<_>>();
            let failure = match c.append_stream(tokio_stream::iter(requests)).await {
                Err(status) => status,
                Ok(answers) => {
                    let mut answers = answers.into_inner();
                    loop {
                        match answers.message().await {
                            Ok(Some(answer)) if next < events.len() => {
                                use pb::append_stream_response::Result as R;
                                match answer.result {
                                    Some(R::Ack(ack)) => self.count(&ack, resent, &mut counted),
                                    Some(R::Rejection(r)) => self.tally.reject(Rejection {
                                        file: batch.file,
                                        line: batch.lines[next],
                                        reason: rejection_text(&r),
                                    }),
                                    None => self.tally.reject(Rejection {
                                        file: batch.file,
                                        line: batch.lines[next],
                                        reason: "no answer from the server".into(),
                                    }),
                                }
                                next += 1;
                                since = Instant::now();
                                backoff = FIRST_BACKOFF;
                            }
                            Ok(Some(_)) => {
                                return Err("the server answered more events than were sent".into())
                            }
                            Ok(None) if next == events.len() => return Ok(()),
                            Ok(None) => break tonic::Status::unavailable("the stream ended early"),
                            Err(status) => break status,
                        }
                    }
                }
            };
            match classify(&failure, backoff)? {
                Next::OneByOne => {
                    return Err(format!("the server refused: {}", failure.message()).into())
                }
                Next::Retry(wait) => {
                    eprintln!(
                        "caravan ingest: connection lost ({}); reconnecting, {} events to re-send",
                        failure.message(),
                        events.len() - next
                    );
                    *client = None;
                    // Answered events are counted; the rest may have been
                    // stored since the batch's first send.
                    resent = resent.or(Some(high_before));
                    self.wait(since, wait).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Ok(())
    }
}
