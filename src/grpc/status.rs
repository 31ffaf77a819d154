//! The one place where errors become gRPC answers: every [`Status`] the
//! service sends and every per-event AppendStream rejection is built here,
//! from an [`Error`], through the code table of [`code`]. The full cause of an
//! internal error is logged; the client gets a short, useful message with
//! structured details (`google.rpc.BadRequest`, `google.rpc.ResourceInfo`,
//! `google.rpc.PreconditionFailure`).
//!
//! Depends on `error`, tonic, tonic-types and the generated `Rejection`; must
//! not depend on the storage engine.

use crate::error::Error;
use crate::proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC code of each kind of error: the whole table.
pub(crate) fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument(_) | Error::Undecodable(_) | Error::NotGrpc(_) => {
            Code::InvalidArgument
        }
        // What the gRPC spec asks for a message over the size limit.
        Error::MessageTooLarge { .. } => Code::ResourceExhausted,
        Error::EventIdConflict { .. } => Code::AlreadyExists,
        Error::UnknownAgreement { .. }
        | Error::AgreementRule { .. }
        | Error::NothingToRetract { .. } => Code::FailedPrecondition,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) | Error::NotOwner { .. } | Error::FeedNotAllowed { .. } => {
            Code::PermissionDenied
        }
        Error::OutOfRange(_) => Code::OutOfRange,
        Error::ResourceExhausted(_) | Error::Stalled { .. } | Error::QuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        Error::DeadlineExceeded => Code::DeadlineExceeded,
        Error::ShuttingDown(_) | Error::Unavailable(_) => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
    }
}

/// Why events were refused, as a fixed word for the metrics' `reason`
/// label (never text from the client).
pub(crate) fn reason(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) | Error::Undecodable(_) | Error::NotGrpc(_) => "invalid",
        Error::MessageTooLarge { .. } => "too_large",
        Error::EventIdConflict { .. } => "id_conflict",
        Error::UnknownAgreement { .. } => "unknown_agreement",
        Error::AgreementRule { .. } => "agreement_rule",
        Error::NothingToRetract { .. } => "nothing_to_retract",
        Error::NotOwner { .. } => "owned_by_another_feed",
        Error::FeedNotAllowed { .. } => "feed_not_allowed",
        Error::Unauthenticated(_) | Error::PermissionDenied(_) => "denied",
        Error::QuotaExceeded { .. } => "quota",
        Error::OutOfRange(_) | Error::ResourceExhausted(_) | Error::Stalled { .. } => "limit",
        Error::DeadlineExceeded => "deadline",
        Error::ShuttingDown(_) => "shutting_down",
        Error::Unavailable(_) => "unavailable",
        Error::Internal(_) => "internal",
    }
}

/// The position in its batch of the event an error is about, if it is
/// about one.
pub(crate) fn event_index(e: &Error) -> Option<usize> {
    match e {
        Error::EventIdConflict { index, .. }
        | Error::UnknownAgreement { index, .. }
        | Error::AgreementRule { index, .. }
        | Error::NotOwner { index, .. }
        | Error::FeedNotAllowed { index, .. }
        | Error::NothingToRetract { index } => Some(*index),
        _ => None,
    }
}

impl From<Error> for Status {
    /// The status of a request; the events of a batch sit at `events[i]`.
    fn from(e: Error) -> Status {
        status_with(e, |i| format!("events[{i}]"))
    }
}

/// The domain of `google.rpc.ErrorInfo` details.
const ERROR_DOMAIN: &str = "caravan";

/// A `google.rpc.ErrorInfo` of caravan's domain.
fn error_info<const N: usize>(reason: &str, metadata: [(&str, String); N]) -> ErrorDetails {
    ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        metadata.map(|(k, v)| (k.to_owned(), v)),
    )
}

/// The most bytes of field violations one status carries: statuses travel
/// in HTTP/2 headers, which clients limit (16 KiB is common) and refuse
/// beyond, as a protocol error.
const MAX_DETAIL_BYTES: usize = 6 * 1024;

/// The status message of invalid arguments: the first three violations and
/// how many more the details list.
fn summary(vs: &[crate::domain::FieldViolation]) -> String {
    let first: Vec<String> = vs
        .iter()
        .take(3)
        .map(|v| {
            let mut d = v.description.clone();
            if d.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|i| d.is_char_boundary(*i))
                    .unwrap_or(0);
                d.truncate(cut);
                d.push('…');
            }
            format!("{}: {d}", v.field)
        })
        .collect();
    let mut message = format!("invalid argument: {}", first.join("; "));
    if vs.len() > 3 {
        message.push_str(&format!(
            "; and {} more (google.rpc.BadRequest lists them)",
            vs.len() - 3
        ));
    }
    message
}

fn status_with(e: Error, path: impl Fn(usize) -> String) -> Status {
    let code = code(&e);
    if let Error::Internal(cause) = &e {
        tracing::error!(error = %cause, "internal error");
        return Status::internal("internal error; see the server log");
    }
    let message = match &e {
        Error::InvalidArgument(vs) => summary(vs),
        _ => e.to_string(),
    };
    let details = match &e {
        Error::InvalidArgument(vs) => {
            let mut d = ErrorDetails::new();
            let mut bytes = 0;
            for (i, v) in vs.iter().enumerate() {
                bytes += v.field.len() + v.description.len();
                if bytes > MAX_DETAIL_BYTES {
                    d.add_bad_request_violation(
                        "",
                        format!("and {} more violations", vs.len() - i),
                    );
                    break;
                }
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
        Error::AgreementRule {
            index,
            payload,
            broken,
            ..
        } => {
            let mut d = ErrorDetails::new();
            d.add_precondition_failure_violation(
                broken.rule,
                format!("{}.{payload}.{}", path(*index), broken.field),
                broken.description.clone(),
            );
            Some(d)
        }
        Error::NotOwner {
            index,
            payload,
            owner,
            feed,
            ..
        } => Some(error_info(
            "OWNED_BY_ANOTHER_FEED",
            [
                ("field", format!("{}.{payload}", path(*index))),
                ("owner", owner.clone()),
                ("feed", feed.clone()),
            ],
        )),
        Error::FeedNotAllowed {
            index,
            feed,
            identity,
        } => Some(error_info(
            "FEED_NOT_ALLOWED",
            [
                ("field", format!("{}.feed", path(*index))),
                ("feed", feed.clone()),
                ("identity", identity.clone()),
            ],
        )),
        Error::QuotaExceeded {
            identity,
            retry_after,
            ..
        } => {
            let mut d = ErrorDetails::new();
            d.add_quota_failure_violation(format!("identity:{identity}"), message.clone());
            if let Some(after) = retry_after {
                d.set_retry_info(Some(*after));
            }
            Some(d)
        }
        Error::NothingToRetract { index } => {
            let mut d = ErrorDetails::new();
            d.add_precondition_failure_violation(
                "RETRACTION_OF_NO_FIGURE",
                format!("{}.trade_record_retracted.key", path(*index)),
                message.clone(),
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

/// The per-event rejection AppendStream sends for `e`, or the status that
/// must end the stream instead (shutting down, unavailable, internal).
pub(crate) fn rejection(e: Error) -> Result<pb::Rejection, Status> {
    let code = code(&e);
    match code {
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::PermissionDenied => {
            let message = e.to_string();
            let field_violations = match e {
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
        _ => Err(status_with(e, |_| "event".to_owned())),
    }
}

/// The status that ends an AppendStream whose request stream failed, as
/// tonic reported it, or `None` when the client went away. tonic's own
/// answers are mapped to the gRPC spec's codes: a message over the size
/// limit is RESOURCE_EXHAUSTED, a malformed frame INVALID_ARGUMENT.
pub(crate) fn request_stream_failed(s: Status) -> Option<Status> {
    match s.code() {
        Code::Cancelled => None,
        Code::OutOfRange => Some(Status::resource_exhausted(format!(
            "{} (--max-message-bytes)",
            s.message()
        ))),
        Code::Internal | Code::Unknown => Some(Status::invalid_argument(format!(
            "the request stream is malformed: {}",
            s.message()
        ))),
        _ => Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldViolation;
    use crate::error::Retry;

    #[test]
    fn every_kind_has_its_code_and_internal_causes_stay_in_the_log() {
        let cases = [
            (
                Error::InvalidArgument(vec![FieldViolation::new("f", "bad")]),
                Code::InvalidArgument,
            ),
            (Error::Undecodable("x".into()), Code::InvalidArgument),
            (
                Error::MessageTooLarge { size: 5, limit: 4 },
                Code::ResourceExhausted,
            ),
            (Error::NotGrpc("text/plain".into()), Code::InvalidArgument),
            (
                Error::EventIdConflict {
                    index: 0,
                    event_id: "e".into(),
                    existing_sequence: None,
                },
                Code::AlreadyExists,
            ),
            (
                Error::UnknownAgreement {
                    index: 0,
                    agreement_id: "a".into(),
                },
                Code::FailedPrecondition,
            ),
            (Error::OutOfRange("x".into()), Code::OutOfRange),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (Error::DeadlineExceeded, Code::DeadlineExceeded),
            (Error::ShuttingDown(Retry::Later), Code::Unavailable),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::Internal("secret cause".into()), Code::Internal),
        ];
        for (e, expected) in cases {
            let status = Status::from(e);
            assert_eq!(status.code(), expected);
            assert!(!status.message().contains("secret"), "{status:?}");
        }
        let status = Status::from(Error::ShuttingDown(Retry::ResumeFromCursor));
        assert_eq!(
            status.message(),
            "the server is shutting down; resume with the last cursor"
        );
    }

    #[test]
    fn client_mistakes_become_rejections_and_the_rest_ends_the_stream() {
        let r = rejection(Error::InvalidArgument(vec![FieldViolation::new(
            "event.feed",
            "is required",
        )]))
        .unwrap();
        assert_eq!(r.code, Code::InvalidArgument as i32);
        assert_eq!(r.field_violations[0].field, "event.feed");
        let end = rejection(Error::ShuttingDown(Retry::ResendUnacknowledged)).unwrap_err();
        assert_eq!(end.code(), Code::Unavailable);
    }
}
