//! What a request to a caravan service must be before tonic decodes it: a
//! tower layer that sees the method path and the raw body.
//!
//! - The content type must be gRPC's (`application/grpc`, `+proto`); anything
//!   else is refused with HTTP 415 and INVALID_ARGUMENT.
//! - A call with a single request message (every RPC but AppendStream) must
//!   carry exactly one: none or two are INVALID_ARGUMENT, not served. Its
//!   length, read from the gRPC frame header, is checked against
//!   `--max-message-bytes` before a byte of it is buffered (RESOURCE_EXHAUSTED).
//! - Its bytes are held against a byte budget shared by every request at once
//!   (`--max-decoding-bytes`): a request waits for room before it is read, and
//!   keeps its share until its handler has answered, so many large requests
//!   at once wait instead of exhausting memory. Where what it is parsed into
//!   may take more than its bytes (an Append of many small good events: about
//!   320 bytes each for the writer, however short on the wire), it holds that
//!   much instead.
//! - Its repeated fields are counted on the encoded bytes (`wire`) before
//!   prost builds anything.
//! - It must arrive whole within `--request-read-timeout-secs`.
//! - An Append whose caller was refused for its append rates, and told to
//!   wait, waits unread until that wait has passed (at most a second).
//!
//! AppendStream's messages are checked one by one in the codec instead, as
//! they arrive. Health and reflection pass through untouched.
//!
//! Depends on `wire`, `access` (the caller), `status` (through `Error`),
//! tower, http and tonic's body.

use super::access::Caller;
use super::wire;
use crate::error::Error;
use http_body_util::BodyExt;
use prost::bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

/// The gRPC frame header: compression flag and length.
const FRAME_HEADER: usize = 5;
/// The one method whose client streams its messages.
const STREAMING_METHOD: &str = "/caravan.v1.IngestService/AppendStream";
/// The method whose caller is paced before it is read.
const APPEND_METHOD: &str = "/caravan.v1.IngestService/Append";

/// The admission settings of a server.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_message_bytes: usize,
    pub wire: wire::Limits,
    /// Bytes of request messages held at once by all requests together.
    pub max_decoding_bytes: usize,
    pub read_timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct AdmissionLayer {
    limits: Arc<Limits>,
    /// The `--max-decoding-bytes` budget: one permit per byte of a request
    /// message, taken before the message is read and given back when its
    /// handler has answered. A request waits (in order) while the budget is
    /// spent; the server holds at most this many bytes of request messages.
    decoding: Arc<Semaphore>,
}

impl AdmissionLayer {
    pub(crate) fn new(mut limits: Limits) -> Self {
        // Every admissible message must fit the budget; permits count in u32.
        limits.max_decoding_bytes = limits
            .max_decoding_bytes
            .max(limits.max_message_bytes + FRAME_HEADER)
            .min(u32::MAX as usize);
        AdmissionLayer {
            decoding: Arc::new(Semaphore::new(limits.max_decoding_bytes)),
            limits: Arc::new(limits),
        }
    }
}

impl AdmissionLayer {
    /// Grows `permit` to `bytes` (at most the whole budget), waiting for
    /// room for at most the read timeout.
    async fn hold_more(
        &self,
        permit: &mut OwnedSemaphorePermit,
        bytes: usize,
    ) -> Result<(), Error> {
        let want = bytes.min(self.limits.max_decoding_bytes);
        let more = want.saturating_sub(permit.num_permits());
        if more == 0 {
            return Ok(());
        }
        // `more` is below the budget, which fits a u32.
        let more = u32::try_from(more).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.decoding).acquire_many_owned(more);
        match tokio::time::timeout(self.limits.read_timeout, acquire).await {
            Ok(Ok(extra)) => {
                permit.merge(extra);
                Ok(())
            }
            _ => Err(Error::ResourceExhausted(format!(
                "the server is busy decoding other requests (--max-decoding-bytes); \
                 no room for {bytes} decoded bytes; retry later"
            ))),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Admitted<S> {
    inner: S,
    layer: AdmissionLayer,
}

type Response = http::Response<Body>;

fn refuse(e: Error) -> Response {
    let not_grpc = matches!(e, Error::NotGrpc(_));
    let mut response = tonic::Status::from(e).into_http::<Body>();
    if not_grpc {
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    response
}

fn is_grpc(content_type: Option<&http::HeaderValue>) -> Result<(), Error> {
    let raw = content_type.map(|v| v.to_str().unwrap_or("(not text)"));
    let ok = raw.is_some_and(|t| {
        let t = t.split(';').next().unwrap_or("").trim();
        t == "application/grpc" || t == "application/grpc+proto"
    });
    if ok {
        Ok(())
    } else {
        Err(Error::NotGrpc(raw.unwrap_or("none").to_owned()))
    }
}

impl<S> tower::Service<http::Request<Body>> for Admitted<S>
where
    S: tower::Service<http::Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with("/caravan.v1.") {
            return Box::pin(self.inner.call(request));
        }
        if let Err(e) = is_grpc(request.headers().get(http::header::CONTENT_TYPE)) {
            return Box::pin(std::future::ready(Ok(refuse(e))));
        }
        let shape = match wire::request_shape(path) {
            Some(shape) if path != STREAMING_METHOD => shape,
            // AppendStream (checked per message by the codec) and unknown
            // methods (tonic answers UNIMPLEMENTED).
            _ => return Box::pin(self.inner.call(request)),
        };
        // An Append that comes before the wait its caller's last refused
        // append was told has passed waits for it, unread, then goes on as
        // any: a client that ignores RetryInfo is paced to its quota, and
        // meanwhile HTTP/2 flow control holds back the bytes it sends.
        let hold = (path == APPEND_METHOD)
            .then(|| request.extensions().get::<Caller>())
            .flatten()
            .and_then(|Caller(caller)| caller.append_hold());
        // The service that was polled ready serves this call; a clone takes
        // its place for the next (tower's usual hand-over).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            if let Some(wait) = hold {
                tokio::time::sleep(wait).await;
            }
            let (parts, body) = request.into_parts();
            let (frame, mut permit) = match read_one(body, &layer).await {
                Ok(read) => read,
                Err(e) => return Ok(refuse(e)),
            };
            let decoded = match wire::check(&frame[FRAME_HEADER..], shape, &layer.limits.wire) {
                Ok(decoded) => decoded,
                Err(e) => return Ok(refuse(e)),
            };
            // What the decoded request will take beyond its bytes (a batch of
            // small events) is held against the budget too, before decoding.
            if let Err(e) = layer.hold_more(&mut permit, decoded).await {
                return Ok(refuse(e));
            }
            let body = Body::new(http_body_util::Full::new(frame));
            let response = inner.call(http::Request::from_parts(parts, body)).await;
            // The decoded request has been handled (or handed to a stream
            // producer, as a small parsed query): its bytes are no longer held.
            drop(permit);
            response
        })
    }
}

/// Reads the one message of a unary request, frame header included, holding
/// its share of the decoding budget; all within the read timeout.
async fn read_one(
    mut body: Body,
    layer: &AdmissionLayer,
) -> Result<(Bytes, OwnedSemaphorePermit), Error> {
    let timeout = layer.limits.read_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut expected: Option<usize> = None;
    loop {
        let next = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| {
                Error::Undecodable(format!(
                "the request did not arrive whole within {timeout:?} (--request-read-timeout-secs)"
            ))
            })?;
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                return Err(Error::Undecodable(format!(
                    "the request body failed: {}",
                    status.message()
                )))
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // request trailers: not used
        };
        if expected.is_some_and(|total| buf.len() + data.remaining() > total) {
            return Err(Error::Undecodable(
                "a unary call carries exactly one request message; this one carries more".into(),
            ));
        }
        buf.extend_from_slice(&data.copy_to_bytes(data.remaining()));
        if expected.is_none() && buf.len() >= FRAME_HEADER {
            if buf[0] != 0 {
                return Err(Error::Undecodable(
                    "compressed request messages are not accepted".into(),
                ));
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > layer.limits.max_message_bytes {
                return Err(Error::MessageTooLarge {
                    size: len,
                    limit: layer.limits.max_message_bytes,
                });
            }
            let total = FRAME_HEADER + len;
            if buf.len() > total {
                return Err(Error::Undecodable(
                    "a unary call carries exactly one request message; this one carries more"
                        .into(),
                ));
            }
            // `total` fits the budget (at least max_message_bytes + 5, u32).
            let share = u32::try_from(total).unwrap_or(u32::MAX);
            let acquire = Arc::clone(&layer.decoding).acquire_many_owned(share);
            let acquired = tokio::time::timeout_at(deadline, acquire)
                .await
                .map_err(|_| {
                    Error::ResourceExhausted(format!(
                        "the server is busy reading other requests (--max-decoding-bytes); \
                         no room for {total} bytes within {timeout:?}; retry later"
                    ))
                })?;
            // The semaphore is never closed.
            permit = acquired.ok();
            buf.reserve(total - buf.len());
            expected = Some(total);
        }
    }
    match (expected, permit) {
        (Some(total), Some(permit)) if buf.len() == total => Ok((buf.freeze(), permit)),
        (Some(total), _) => Err(Error::Undecodable(format!(
            "the request message ends after {} of its {total} bytes",
            buf.len()
        ))),
        (None, _) if buf.is_empty() => Err(Error::Undecodable(
            "the call carries no request message".into(),
        )),
        (None, _) => Err(Error::Undecodable(
            "the request ends inside a gRPC frame header".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_content_types_are_admitted() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc; x=y",
        ] {
            assert!(
                is_grpc(Some(&http::HeaderValue::from_static(ok))).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "application/json",
            "text/plain",
            "application/grpc+json",
            "",
        ] {
            assert!(
                is_grpc(Some(&http::HeaderValue::from_static(bad))).is_err(),
                "{bad}"
            );
        }
        assert!(is_grpc(None).is_err());
    }
}
