//! The service's error kinds and the one place where they become gRPC
//! statuses (and, for AppendStream, per-event rejections). The full cause is
//! logged; the client gets a short, useful message with structured details
//! (`google.rpc.BadRequest`, `google.rpc.PreconditionFailure`).
//!
//! Depends on the domain's `FieldViolation`, tonic and tonic-types; must not
//! depend on the storage engine.

use crate::domain::FieldViolation;
use crate::proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing of it was stored.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// An event id is already taken by different content (stored, or earlier
    /// in the same batch). `index` is the event's position in its batch.
    #[error("event id {event_id:?} is already used by {}", match .existing_sequence { Some(s) => format!("stored event {s} with different content"), None => "an earlier event of this batch with different content".to_owned() })]
    EventIdConflict {
        index: usize,
        event_id: String,
        existing_sequence: Option<u64>,
    },

    /// A status change names an agreement that does not exist.
    #[error("agreement {agreement_id:?} is not known; send the Agreement event first")]
    UnknownAgreement { index: usize, agreement_id: String },

    /// A value is valid but outside what exists (e.g. a future sequence).
    #[error("{0}")]
    OutOfRange(String),

    /// A limit was reached; the request may succeed later or smaller.
    #[error("{0}")]
    ResourceExhausted(String),

    /// The server is shutting down or its store can no longer write; retry
    /// elsewhere or later (ingestion is idempotent).
    #[error("{0}")]
    Unavailable(String),

    /// A bug or a storage failure; details are in the server log.
    #[error("{0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::EventIdConflict { .. } => Code::AlreadyExists,
            Error::UnknownAgreement { .. } => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// Prefixes the field paths of violations, e.g. with `events[3]`.
    pub fn nested(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument(vs) => {
                Error::InvalidArgument(vs.into_iter().map(|v| v.nested(prefix)).collect())
            }
            other => other,
        }
    }

    /// The status for a batch request whose events sit at `events[i]`.
    pub fn into_status(self) -> Status {
        self.status_with(|i| format!("events[{i}]"))
    }

    fn status_with(self, path: impl Fn(usize) -> String) -> Status {
        let code = self.code();
        if code == Code::Internal {
            tracing::error!(error = %self, "internal error");
            return Status::internal("internal error; see the server log");
        }
        let message = self.to_string();
        let details = match &self {
            Error::InvalidArgument(vs) => {
                let mut d = ErrorDetails::new();
                for v in vs {
                    d.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Some(d)
            }
            Error::EventIdConflict { index, .. } => Some(ErrorDetails::with_resource_info(
                "caravan.v1.Event",
                format!("{}.event_id", path(*index)),
                "",
                message.clone(),
            )),
            Error::UnknownAgreement {
                index,
                agreement_id,
            } => {
                let mut d = ErrorDetails::new();
                d.add_precondition_failure_violation(
                    "UNKNOWN_AGREEMENT",
                    format!("{}.agreement_status_changed.agreement_id", path(*index)),
                    format!("agreement {agreement_id:?} is not known"),
                );
                Some(d)
            }
            _ => None,
        };
        match details {
            Some(d) => Status::with_error_details(code, message, d),
            None => Status::new(code, message),
        }
    }

    /// The per-event rejection AppendStream sends for this error, or `None`
    /// when the error must end the stream (unavailable, internal).
    pub fn into_rejection(self) -> Result<pb::Rejection, Status> {
        let code = self.code();
        match code {
            Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => {
                let message = self.to_string();
                let field_violations = match self {
                    Error::InvalidArgument(vs) => vs
                        .into_iter()
                        .map(|v| pb::FieldViolation {
                            field: v.field,
                            description: v.description,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                Ok(pb::Rejection {
                    code: code as i32,
                    message,
                    field_violations,
                })
            }
            _ => Err(self.status_with(|_| "event".to_owned())),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.into_status()
    }
}
