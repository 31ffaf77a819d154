//! The `OperationsService`: Backup (the log streamed up to a snapshot
//! sequence fixed when the call starts, while ingest goes on) and Verify
//! (the store and the views checked while they serve). Both need the
//! `admin` scope (the access layer) and run one at a time each.
//!
//! Must not depend on sled; the checks are the store's and `ops::verify`'s.

use crate::error::Error;
use crate::grpc::shutdown::Shutdown;
use crate::grpc::stream::{self, Answer};
use crate::proto::v1 as pb;
use crate::proto::v1::operations_service_server::OperationsService;
use crate::storage::StoreHandle;
use crate::views::Views;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Events read from the log per step of a backup.
pub const BACKUP_EVENTS_PER_READ: usize = 4096;
/// Backup messages buffered ahead of the client.
const BACKUP_BUFFER: usize = 4;

pub(crate) struct OperationsApi {
    store: StoreHandle,
    views: Arc<Views>,
    /// Where Verify builds its scratch store (a temporary directory in it).
    scratch: PathBuf,
    shutdown: Shutdown,
    tasks: TaskTracker,
    /// One backup at a time: a second is RESOURCE_EXHAUSTED rather than
    /// doubling the read load.
    backups: Arc<Semaphore>,
    /// One verification at a time (each builds a scratch store).
    verifications: Arc<Semaphore>,
    /// Bytes of events per backup message: half of --max-message-bytes, so
    /// that a message with its framing stays within what both ends take.
    message_budget: usize,
}

impl OperationsApi {
    pub(crate) fn new(
        store: StoreHandle,
        views: Arc<Views>,
        scratch: PathBuf,
        shutdown: Shutdown,
        tasks: TaskTracker,
        max_message_bytes: usize,
    ) -> Self {
        OperationsApi {
            message_budget: (max_message_bytes / 2).max(8192),
            store,
            views,
            scratch,
            shutdown,
            tasks,
            backups: Arc::new(Semaphore::new(1)),
            verifications: Arc::new(Semaphore::new(1)),
        }
    }
}

fn busy(what: &str) -> Status {
    Error::ResourceExhausted(format!("another {what} is running; one runs at a time")).into()
}

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    type BackupStream = Answer<pb::BackupResponse>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let after = request.get_ref().after_sequence;
        let snapshot = self.store.last_sequence();
        if after > snapshot {
            return Err(Error::OutOfRange(format!(
                "after_sequence {after} is beyond the newest event {snapshot}"
            ))
            .into());
        }
        let permit = Arc::clone(&self.backups)
            .try_acquire_owned()
            .map_err(|_| busy("backup"))?;
        let (out, answer) = stream::channel(BACKUP_BUFFER, None);
        let store = self.store.clone();
        let mut shutdown = self.shutdown.clone();
        let budget = self.message_budget;
        tracing::info!(after, snapshot, "backup started");
        self.tasks.spawn(
            async move {
                let _permit = permit;
                let header = pb::BackupResponse {
                    part: Some(pb::backup_response::Part::Header(pb::BackupHeader {
                        snapshot_sequence: snapshot,
                        store_format: crate::storage::FORMAT_VERSION,
                    })),
                };
                if out.send(header, 0).await.is_err() {
                    return;
                }
                let mut cursor = after;
                while cursor < snapshot {
                    if shutdown.is_shutdown() {
                        return out.fail(Error::ShuttingDown(crate::error::Retry::Later).into());
                    }
                    let s = store.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        s.raw_events_after(cursor, snapshot, BACKUP_EVENTS_PER_READ)
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("backup task: {e}")))
                    .and_then(|r| r);
                    let events = match read {
                        Ok(e) if !e.is_empty() => e,
                        Ok(_) => {
                            return out.fail(
                                Error::Internal(format!(
                                    "the log ends at {cursor}, before the snapshot {snapshot}"
                                ))
                                .into(),
                            )
                        }
                        Err(e) => return out.fail(e.into()),
                    };
                    // Messages of at most `budget` bytes of events each.
                    let mut events = events.into_iter().peekable();
                    while events.peek().is_some() {
                        let mut part = Vec::new();
                        let mut bytes = 0;
                        while let Some(e) = events.next_if(|e| part.is_empty() || bytes + e.len() <= budget) {
                            bytes += e.len();
                            part.push(e);
                        }
                        let first = cursor + 1;
                        cursor += part.len() as u64;
                        let message = pb::BackupResponse {
                            part: Some(pb::backup_response::Part::Events(pb::BackupEvents {
                                first_sequence: first,
                                stored_events: part,
                            })),
                        };
                        tokio::select! {
                            sent = out.send(message, 0) => if sent.is_err() { return },
                            _ = shutdown.wait() => {
                                return out.fail(Error::ShuttingDown(crate::error::Retry::Later).into());
                            }
                        }
                    }
                }
                tracing::info!(after, snapshot, "backup streamed");
            }
            .in_current_span(),
        );
        Ok(Response::new(answer))
    }

    async fn verify(
        &self,
        _request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let _permit = Arc::clone(&self.verifications)
            .try_acquire_owned()
            .map_err(|_| busy("verification"))?;
        let store = self.store.clone();
        let report = tokio::task::spawn_blocking(move || store.check())
            .await
            .map_err(|e| Error::Internal(format!("verify task: {e}")))??;
        let mut findings = report.findings;
        let mut checked = report.checked;
        let snapshot = self.views.positions().0.min(report.last_sequence);
        if findings.iter().any(|f| f.area == "log") {
            checked.push("views: not compared, the log is damaged".into());
        } else {
            let scratch = tempfile::Builder::new()
                .prefix("caravan-verify-")
                .tempdir_in(&self.scratch)
                .map_err(|e| {
                    Error::Internal(format!(
                        "verify: a scratch directory in {}: {e}",
                        self.scratch.display()
                    ))
                })?;
            let (more, line) = crate::ops::verify::views_against_log(
                &self.store,
                &self.views,
                snapshot,
                scratch.path(),
            )
            .await?;
            findings.extend(more);
            checked.push(line);
        }
        tracing::info!(
            sequence = snapshot,
            findings = findings.len(),
            "verify finished"
        );
        Ok(Response::new(pb::VerifyResponse {
            sequence: snapshot,
            findings: findings
                .into_iter()
                .map(|f| pb::VerifyFinding {
                    area: f.area.into(),
                    first_sequence: f.first,
                    last_sequence: f.last,
                    description: f.description,
                })
                .collect(),
            checked,
        }))
    }
}
