//! What can go wrong while serving a request, as one enum shared by every
//! layer that can fail (storage, the services, the edge). How each kind is
//! answered on the wire (its gRPC code and details) is decided in one place,
//! `grpc::status`.
//!
//! Depends only on the domain's `FieldViolation`; must not depend on tonic,
//! the generated code or sled.

use crate::domain::FieldViolation;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing of it was stored.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// A request body that is not a protobuf message of its type, or not
    /// framed as gRPC frames it (a unary call with no message or two).
    #[error("undecodable request: {0}")]
    Undecodable(String),

    /// A request message larger than `--max-message-bytes`; refused before it
    /// is read.
    #[error("the request message is {size} bytes; the limit is {limit} (--max-message-bytes)")]
    MessageTooLarge { size: usize, limit: usize },

    /// A request that is not gRPC (its content type).
    #[error("not a gRPC request (content-type {0:?}); caravan speaks gRPC with protobuf messages")]
    NotGrpc(String),

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

    /// A status change or amendment that does not follow from where its
    /// agreement stands (`domain::Lifecycle`). `payload` is the event's
    /// payload field (`agreement` or `agreement_status_changed`).
    #[error("agreement {agreement_id:?}: {}", .broken.description)]
    AgreementRule {
        index: usize,
        agreement_id: String,
        payload: &'static str,
        broken: crate::domain::Broken,
    },

    /// An event that changes what another feed owns (a figure it recorded
    /// first, an agreement it stored first), sent by an identity without the
    /// `curate` scope. `payload` is the event's payload field.
    #[error("{what} belongs to feed {owner:?}, which stored it first; feed {feed:?} may not change it (that needs the curate scope)")]
    NotOwner {
        index: usize,
        payload: &'static str,
        what: String,
        owner: String,
        feed: String,
    },

    /// An event under a feed that the caller may not write.
    #[error(
        "identity {identity:?} may not write feed {feed:?} (its feeds are set in the auth file)"
    )]
    FeedNotAllowed {
        index: usize,
        feed: String,
        identity: String,
    },

    /// No valid credentials: no bearer token or client certificate that
    /// names an identity of the auth file.
    #[error("{0}")]
    Unauthenticated(String),

    /// A known identity without the right to this call or this data.
    #[error("{0}")]
    PermissionDenied(String),

    /// An identity's quota is used up; `retry_after` says when the request
    /// would fit again (`None`: it never will, as it is).
    #[error("{message}")]
    QuotaExceeded {
        identity: String,
        message: String,
        retry_after: Option<std::time::Duration>,
    },

    /// A retraction of a figure that is not current: never stored, or
    /// retracted already.
    #[error(
        "there is no current figure with this key to retract (never stored, or retracted already)"
    )]
    NothingToRetract { index: usize },

    /// A value is valid but outside what exists (e.g. a future sequence).
    #[error("{0}")]
    OutOfRange(String),

    /// A limit was reached; the request may succeed later or smaller.
    #[error("{0}")]
    ResourceExhausted(String),

    /// The call's deadline (`grpc-timeout`) passed before it finished.
    #[error("the deadline expired")]
    DeadlineExceeded,

    /// A stream whose client accepted nothing for `after` was ended, so that
    /// it does not hold a slot others need.
    #[error("the client accepted no message for {after:?} (--stall-timeout-secs); the stream was released{}", .retry.advice())]
    Stalled {
        after: std::time::Duration,
        retry: Retry,
    },

    /// The server is shutting down; `.0` says how the client carries on.
    #[error("the server is shutting down{}", .0.advice())]
    ShuttingDown(Retry),

    /// The store can no longer write; retry elsewhere or after a restart
    /// (ingestion is idempotent).
    #[error("{0}")]
    Unavailable(String),

    /// A bug or a storage failure; details are in the server log.
    #[error("{0}")]
    Internal(String),
}

/// How a client carries on after [`Error::ShuttingDown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Send the request again later or to another server.
    Later,
    /// An AppendStream: re-send what was not acknowledged.
    ResendUnacknowledged,
    /// A query stream: send the request again with the last cursor.
    ResumeFromCursor,
    /// A subscription: subscribe again after the last checkpoint.
    ResubscribeFromCheckpoint,
}

impl Retry {
    pub(crate) fn advice(self) -> &'static str {
        match self {
            Retry::Later => "",
            Retry::ResendUnacknowledged => "; re-send the events that were not acknowledged",
            Retry::ResumeFromCursor => "; resume with the last cursor",
            Retry::ResubscribeFromCheckpoint => {
                "; resubscribe with after_sequence = the last checkpoint"
            }
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Prefixes the field paths of violations, e.g. with `events[3]`.
    pub(crate) fn nested(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument(vs) => {
                Error::InvalidArgument(vs.into_iter().map(|v| v.nested(prefix)).collect())
            }
            other => other,
        }
    }
}

impl From<Vec<FieldViolation>> for Error {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Error::InvalidArgument(violations)
    }
}
